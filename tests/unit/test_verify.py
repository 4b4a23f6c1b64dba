import datetime as dt
from decimal import Decimal

from ecst.verify import compare_rows


def test_equal_rows_match_across_representations():
    src = [{"id": 1, "t": dt.datetime(2024, 1, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=1))),
            "n": Decimal("1.10"), "b": memoryview(b"x")}]
    dst = [{"id": 1, "t": dt.datetime(2024, 1, 1, 11, tzinfo=dt.UTC), "n": Decimal("1.1"),
            "b": b"x", "extra": 5}]
    result = compare_rows(src, dst, ["id"])
    assert result.matches and result.summary() == "private state matches producer: 1 rows"


def test_missing_extra_and_differing_are_reported():
    src = [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}]
    dst = [{"id": 2, "v": "B"}, {"id": 3, "v": "c"}]
    result = compare_rows(src, dst, ["id"])
    assert not result.matches
    assert (result.missing, result.extra, result.differing) == ([(1,)], [(3,)], [((2,), "v", "b", "B")])
    assert "DIFFERS" in result.summary()


# ---- issue 9: each column compared the way the consumer stores it --------------------------

def src(base, element=None):
    from ecst.verify import SourceColumn

    return SourceColumn(name="c", type=base, base=base, oid=0, element=element, element_oid=None)


def fld(type_, logical=None, items=None):
    from ecst.consumer.types import Field

    return Field(name="c", type=type_, logical=logical, items=items)


def test_column_kinds_follow_the_recorded_schema_then_the_source_type():
    from ecst.consumer.types import Field
    from ecst.verify import (
        ARRAY,
        DECIMAL,
        FLOAT,
        INTERVAL_ISO,
        INTERVAL_MICROS,
        JSON_DOC,
        TEXT,
        UNSUPPORTED,
        VALUE,
        column_kind,
    )

    cases = [
        (src("interval"), fld("int64", "io.debezium.time.MicroDuration"), INTERVAL_MICROS),
        (src("interval"), fld("string", "io.debezium.time.Interval"), INTERVAL_ISO),
        (src("interval"), fld("int64"), INTERVAL_MICROS),  # recorded without a schema
        (src("interval"), fld("string"), INTERVAL_ISO),
        (src("interval"), None, INTERVAL_MICROS),
        (src("jsonb"), fld("string", "io.debezium.data.Json"), JSON_DOC),
        (src("json"), fld("string"), JSON_DOC),
        (src("inet"), fld("string"), TEXT),
        (src("cidr"), None, TEXT),
        (src("uuid"), fld("string", "io.debezium.data.Uuid"), TEXT),
        (src("money"), fld("bytes", "org.apache.kafka.connect.data.Decimal"), DECIMAL),
        (src("money"), None, DECIMAL),
        (src("numeric"), fld("double"), FLOAT),
        (src("timestamptz"), fld("string", "io.debezium.time.ZonedTimestamp"), VALUE),
        (src("_int4", "integer"), fld("array", items=Field("", "int32")), ARRAY),
        (src("_date", "date"), fld("array", items=Field("", "int32", "io.debezium.time.Date")), UNSUPPORTED),
        (src("point"), fld("struct", "io.debezium.data.geometry.Point"), UNSUPPORTED),
        (src("bit"), fld("bytes", "io.debezium.data.Bits"), UNSUPPORTED),
        (src("hstore"), fld("string", "io.debezium.data.Json"), UNSUPPORTED),
    ]
    for source, recorded, kind in cases:
        assert column_kind(source, recorded) == kind, (source.base, recorded)


def test_json_compares_by_value_and_null_is_not_json_null():
    from ecst.verify import ARRAY, JSON_DOC, comparable

    def same(kind, source, state):
        return comparable(kind, source, source=True) == comparable(kind, state, source=False)

    assert same(JSON_DOC, '{"b": 1,  "a": [1,2]}', '{"a": [1, 2], "b": 1}')
    assert not same(JSON_DOC, '{"a": 1}', '{"a": 2}')
    assert not same(JSON_DOC, None, "null") and not same(JSON_DOC, "null", None)
    assert same(JSON_DOC, "null", "null") and same(JSON_DOC, None, None)
    assert same(ARRAY, [1, None, 3], "[1, null, 3]")
    assert not same(ARRAY, None, "null") and not same(ARRAY, [], None)


def test_intervals_inet_and_decimals_compare_as_stored():
    import uuid

    from ecst.verify import DECIMAL, INTERVAL_ISO, INTERVAL_MICROS, TEXT, comparable

    def same(kind, source, state):
        return comparable(kind, source, source=True) == comparable(kind, state, source=False)

    # numeric mode: months are 30.4375 days; psycopg's own timedelta would count 30
    assert same(INTERVAL_MICROS, "P1Y2M3DT4H5M6.78S", dt.timedelta(microseconds=37091106780000))
    assert not same(INTERVAL_MICROS, "P1Y2M3DT4H5M6.78S", dt.timedelta(microseconds=37091106780001))
    assert same(INTERVAL_MICROS, "P-1DT2H3M0.000001S", -79019999999)
    assert same(INTERVAL_ISO, "P-1DT2H3M0.000001S", "P0Y0M-1DT2H3M0.000001S")
    assert not same(INTERVAL_ISO, "P1M", "P0Y0M30DT0H0M0S")  # a month is not 30 days
    assert same(TEXT, "::ffff:1.2.3.4", "::ffff:1.2.3.4")
    assert not same(TEXT, "::ffff:1.2.3.4", "::ffff:102:304")
    assert same(TEXT, uuid.UUID(int=5), str(uuid.UUID(int=5)))
    a, b = comparable(DECIMAL, Decimal("1.10"), source=True), comparable(DECIMAL, "1.1", source=False)
    assert a == b and repr(a) == repr(b)  # equal checksums too
    assert comparable(INTERVAL_ISO, "garbage", source=False) != comparable(INTERVAL_ISO, "PT0S", source=True)


def test_drift_names_columns_it_did_not_compare():
    from ecst.verify import Comparison, Drift

    clean = Drift("public.t", "t", 1, 0, Comparison(2, 2), {"pt": "point"})
    assert not clean.drifted
    assert clean.summary().endswith("not compared (verify cannot compare these types): pt (point): no drift")
    drifted = Drift("public.t", "t", 1, 1, Comparison(2, 2, differing=[((1,), "v", 1, 2)]))
    assert drifted.drifted and "DRIFT" in drifted.summary()
