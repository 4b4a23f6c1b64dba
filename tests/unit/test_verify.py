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
