"""`jsontext.loads` (orjson) gives exactly what `json.loads` gives: values, types and errors."""

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecst.consumer.jsontext import loads


def same(a, b):
    """Equal values of the same types all the way down (NaN equals NaN, -0.0 differs from 0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def outcome(parse, raw):
    try:
        return "value", parse(raw)
    except Exception as exc:  # the same class and message as json.loads
        return "error", (type(exc), str(exc))


def assert_as_stdlib(raw):
    mine, theirs = outcome(loads, raw), outcome(json.loads, raw)
    assert mine[0] == theirs[0], (raw, mine, theirs)
    if mine[0] == "value":
        assert same(mine[1], theirs[1]), (raw, mine, theirs)
    else:
        assert mine[1] == theirs[1]


EDGES = [
    # integers around the 64-bit limits, where orjson alone would give a float
    b"9223372036854775807", b"9223372036854775808", b"18446744073709551615", b"18446744073709551616",
    b"-9223372036854775808", b"-9223372036854775809", b"-18446744073709551616",
    b"123456789012345678901234567890", b"-123456789012345678901234567890",
    b'{"a":[1,18446744073709551616,{"b":-9223372036854775809}]}', b"1704069247123456789",
    b"-1704069247123456789", b'"12345678901234567890"', b"0", b"-0", b"-0.0", b"1.0", b"1E2", b"1e-400",
    b"1e16", b"0.30000000000000004", b"123456789012345678.5", b"12345678901234567890e-5",
    b"1.7976931348623157e308", b"5e-324", b"2.2250738585072011e-308", b"1.2345678901234567890123",
    # what only json.loads reads
    b"1e400", b"-1e400", b"NaN", b"Infinity", b"-Infinity", b'{"x":NaN}', b"\xef\xbb\xbf{}",
    '{"a":1}'.encode("utf-16"), '{"a":1}'.encode("utf-32"), b'"\\ud800"', b'"\xed\xa0\x80"',
    # what both refuse, each with json.loads's error
    b"", b" ", b"{not json", b"[1,]", b"01", b"1.", b'{"a":1}x', b'"\xff"', b'"\x00"', b'"a\tb"',
    b"\x00\x00\x00\x00", b'"\x00ab"',
    # plain documents, duplicate keys, escapes
    b'{"a":1,"b":2,"a":3}', b'{"\\u00e9":"\\u00e9","s":"a\\/b\\n"}', b'"\\ud83d\\ude00"',
    b"[true,false,null]",
]


@pytest.mark.parametrize("raw", EDGES)
def test_edge_documents_read_as_json_loads_reads_them(raw):
    assert_as_stdlib(raw)
    if isinstance(raw, bytes):
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            return
        assert_as_stdlib(text)


def test_other_argument_types_fail_or_pass_as_with_json_loads():
    assert_as_stdlib(bytearray(b'{"a":18446744073709551616}'))
    assert_as_stdlib(memoryview(b"[1]"))
    assert_as_stdlib(12)
    assert_as_stdlib("\ud800")  # a str that cannot be UTF-8


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True, allow_infinity=True)
    | st.integers() | st.integers(-(2**70), 2**70) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(value=json_values, ascii_only=st.booleans())
def test_any_document_reads_as_json_loads_reads_it(value, ascii_only):
    text = json.dumps(value, ensure_ascii=ascii_only)
    assert_as_stdlib(text)
    assert_as_stdlib(text.encode("utf-8", "surrogatepass"))


@settings(max_examples=200, deadline=None)
@given(value=json_values, data=st.data())
def test_damaged_documents_fail_or_pass_as_with_json_loads(value, data):
    raw = bytearray(json.dumps(value, separators=(",", ":")).encode())
    for _ in range(data.draw(st.integers(1, 3))):
        where = data.draw(st.integers(0, len(raw)))
        raw[where:where + data.draw(st.integers(0, 2))] = data.draw(st.binary(max_size=3))
    assert_as_stdlib(bytes(raw))
