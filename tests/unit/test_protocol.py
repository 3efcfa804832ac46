"""The ML wire format: every bad request is refused with what was expected."""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import pytest
import redis

from unistack.ml.protocol import (
    DEFAULT_LIMITS,
    Limits,
    RequestError,
    check_features,
    decode_reply,
    encode_ok,
    encode_reply,
    encode_request,
    ok_prefix,
    packed,
    parse,
)

NOW_MS = int(time.time() * 1000)


def as_fields(fields: dict[str, Any]) -> dict[bytes, bytes]:
    """What redis-py returns for an entry: bytes keys and values."""
    out = {}
    for key, value in fields.items():
        out[key.encode()] = value if isinstance(value, bytes) else str(value).encode()
    return out


def binary(rows: Any, **changes: Any) -> dict[bytes, bytes]:
    fields = encode_request("req-1", "alpha", np.asarray(rows, dtype=np.float32), NOW_MS)
    fields.update(changes)
    return as_fields({k: v for k, v in fields.items() if v is not None})


def json_form(document: str, **changes: Any) -> dict[bytes, bytes]:
    fields = {"id": "req-2", "model": "alpha", "deadline_ms": NOW_MS, "json": document}
    fields.update(changes)
    return as_fields(fields)


def test_binary_round_trip() -> None:
    rows = np.arange(12, dtype=np.float32).reshape(3, 4)
    request = parse(binary(rows))
    assert request.id == "req-1" and request.model == "alpha" and not request.as_json
    assert request.version is None and request.deadline_ms == NOW_MS
    np.testing.assert_array_equal(request.rows, rows)


def test_json_round_trip_with_a_pinned_version() -> None:
    request = parse(json_form('{"rows": [[1, 2.5], [3, 4]]}', version=3))
    assert request.as_json and request.version == 3
    np.testing.assert_array_equal(request.rows, np.array([[1, 2.5], [3, 4]], np.float32))


@pytest.mark.parametrize(("fields", "message"), [
    (binary([[1.0]], dtype="float64"), "dtype 'float64' is not supported: expected 'float32'"),
    (binary([[1.0]], shape="1x1"), "shape '1x1' is invalid"),
    (binary([[1.0, 2.0]], shape="3,1"), "data is 8 bytes but shape 3,1 of float32 needs 12"),
    (binary([[1.0]], shape="0,1", data=b""), "is empty"),
    (binary([[np.nan, 1.0]]), "row 0, column 0 is nan: expected a finite number"),
    (binary([[1.0, np.inf]]), "row 0, column 1 is inf"),
    (binary([[1.0]], id="bad id"), "id 'bad id' is invalid"),
    (binary([[1.0]], deadline_ms="soon"), "deadline_ms 'soon' is invalid"),
    (binary([[1.0]], version="latest"), "version 'latest' is invalid"),
    (binary([[1.0]], colour="blue"), "unknown field(s) ['colour']"),
    (binary([[1.0]], model=None), "missing field(s) ['model']"),
    (json_form('{"rows": [[1, NaN]]}'), "NaN is not a finite number"),
    (json_form('{"rows": [[1, 1e999]]}'), "is inf: expected a finite number"),
    (json_form('{"rows": [[1, 2], [3]]}'), "different lengths [1, 2]"),
    (json_form('{"rows": [[1, "x"]]}'), "every value in rows must be a number"),
    (json_form('{"rows": [[true]]}'), "every value in rows must be a number"),
    (json_form('{"rows": []}'), "at least one row"),
    (json_form("[1, 2"), "json is not valid JSON"),
    (json_form('{"rows": [[1]]}', data=b"\x00" * 4), "exactly one of 'data'"),
])
def test_bad_requests_name_what_was_expected(fields: dict[bytes, bytes], message: str) -> None:
    with pytest.raises(RequestError) as refused:
        parse(fields)
    assert message in str(refused.value)


def test_size_limits() -> None:
    with pytest.raises(RequestError, match="5 rows: at most 4 per request"):
        parse(binary(np.zeros((5, 1))), Limits(max_rows=4))
    with pytest.raises(RequestError, match="at most 16 allowed"):
        parse(binary(np.zeros((5, 1))), Limits(max_bytes=16))


def test_feature_count_is_checked_against_the_model() -> None:
    request = parse(binary(np.zeros((2, 3))))
    with pytest.raises(RequestError, match="3 features per row, but model 'alpha' expects 20"):
        check_features(request, 20)
    check_features(request, 3)


def test_replies_round_trip_in_both_forms() -> None:
    predictions = np.array([0.25, 0.75], dtype=np.float32)
    header, values = decode_reply(encode_reply({"id": "r", "status": "ok"}, predictions, False))
    assert header["shape"] == [2]
    np.testing.assert_array_equal(values, predictions)
    payload = encode_reply({"id": "r", "status": "ok"}, predictions, True)
    assert json.loads(payload)["predictions"] == [0.25, 0.75]
    header, values = decode_reply(payload)
    np.testing.assert_array_equal(values, predictions)
    header, values = decode_reply(encode_reply({"id": "r", "status": "invalid",
                                                "error": "why"}, None, False))
    assert values is None and header["error"] == "why"


# --- size limits: exactly at a limit is served, one unit over it is refused ------------


def padded(document: str, size: int) -> str:
    """DOCUMENT followed by whitespace (still the same JSON) to exactly SIZE bytes."""
    return document + " " * (size - len(document.encode()))


def json_rows(rows: int, columns: int = 1) -> str:
    return json.dumps({"rows": [[0.5] * columns] * rows})


def test_json_of_exactly_max_bytes_is_accepted_and_one_byte_more_is_refused() -> None:
    limits = Limits(max_bytes=64)
    document = '{"rows": [[1, 2], [3, 4]]}'
    request = parse(json_form(padded(document, 64)), limits)
    np.testing.assert_array_equal(request.rows, np.array([[1, 2], [3, 4]], np.float32))
    with pytest.raises(RequestError) as refused:
        parse(json_form(padded(document, 65)), limits)
    assert str(refused.value) == "json is 65 bytes: at most 64 allowed"


def test_json_over_max_bytes_is_refused_before_it_is_parsed() -> None:
    with pytest.raises(RequestError) as refused:
        parse(json_form("[" * 65), Limits(max_bytes=64))  # not JSON either: never read
    assert str(refused.value) == "json is 65 bytes: at most 64 allowed"


def test_json_is_held_to_the_default_16_mib() -> None:
    limit = 16 * 2**20
    assert DEFAULT_LIMITS.max_bytes == limit
    document = '{"rows": [[1, 2]]}'
    assert parse(json_form(padded(document, limit))).rows.shape == (1, 2)
    with pytest.raises(RequestError) as refused:
        parse(json_form(padded(document, limit + 1)))
    assert str(refused.value) == f"json is {limit + 1} bytes: at most {limit} allowed"


def test_data_of_exactly_max_bytes_is_accepted_and_one_value_more_is_refused() -> None:
    limits = Limits(max_bytes=64)
    assert parse(binary(np.ones((4, 4))), limits).rows.shape == (4, 4)  # 64 bytes
    with pytest.raises(RequestError) as refused:
        parse(binary(np.ones((17, 1))), limits)  # 68 bytes, shape and data agreeing
    assert str(refused.value) == "data is 68 bytes: at most 64 allowed"


def test_data_is_held_to_the_default_16_mib() -> None:
    limit = DEFAULT_LIMITS.max_bytes
    at_limit = np.zeros((DEFAULT_LIMITS.max_rows, limit // 4 // DEFAULT_LIMITS.max_rows))
    assert parse(binary(at_limit)).rows.nbytes == limit
    with pytest.raises(RequestError) as refused:
        parse(binary(np.zeros((1, limit // 4 + 1))))
    assert str(refused.value) == f"data is {limit + 4} bytes: at most {limit} allowed"


@pytest.mark.parametrize("form", ["binary", "json"])
def test_exactly_max_rows_is_accepted_and_one_row_more_is_refused(form: str) -> None:
    def request(rows: int) -> dict[bytes, bytes]:
        return binary(np.zeros((rows, 3))) if form == "binary" else json_form(json_rows(rows, 3))

    limits = Limits(max_rows=4)
    assert parse(request(4), limits).rows.shape == (4, 3)
    with pytest.raises(RequestError) as refused:
        parse(request(5), limits)
    assert str(refused.value) == "5 rows: at most 4 per request"


@pytest.mark.parametrize("form", ["binary", "json"])
def test_rows_are_held_to_the_default_limit(form: str) -> None:
    def request(rows: int) -> dict[bytes, bytes]:
        return binary(np.zeros((rows, 1))) if form == "binary" else json_form(json_rows(rows))

    limit = DEFAULT_LIMITS.max_rows
    assert limit == 65536
    assert parse(request(limit)).rows.shape == (limit, 1)
    with pytest.raises(RequestError) as refused:
        parse(request(limit + 1))
    assert str(refused.value) == f"{limit + 1} rows: at most {limit} per request"


def test_a_number_too_large_for_a_float_is_refused_not_raised() -> None:
    """json.loads reads any integer; numpy's float64 overflows: a request error, never an
    OverflowError escaping the engine's loop."""
    with pytest.raises(RequestError, match="too large for a number"):
        parse(json_form('{"rows": [[' + "9" * 400 + ']]}'))


@pytest.mark.parametrize("field", ["version", "deadline_ms"])
@pytest.mark.parametrize("value", ["²", "٣", "1" * 19, "-1", "1.5"])
def test_a_whole_number_field_takes_ascii_digits_only(field: str, value: str) -> None:
    """str.isdigit accepts "²" and "٣", which int() then refuses with a ValueError."""
    with pytest.raises(RequestError, match=f"{field} .* is invalid"):
        parse(binary(np.zeros((1, 1)), **{field: value}))


# --- the whole message of every refusal, and the forms a producer may send --------------

ROWS_EXPECTED = 'json must be {"rows": [[number, ...], ...]} with at least one row'


@pytest.mark.parametrize(("fields", "message"), [
    (binary([[1.0, 2.0]], shape="2,3"), "data is 8 bytes but shape 2,3 of float32 needs 24"),
    (binary([[1.0]], shape="0,3", data=b""),
     "shape 0,3 is empty: expected at least one row and one column"),
    (binary([[1.0]], shape="3,0", data=b""),
     "shape 3,0 is empty: expected at least one row and one column"),
    (json_form('{"rows": [[1]]}', data=b"\x00" * 4),
     "expected exactly one of 'data' (with dtype and shape) or 'json'"),
    (json_form('{"rows": [[1, "x"]]}'), "every value in rows must be a number"),
    (json_form('{"columns": [[1]]}'), ROWS_EXPECTED),
    (json_form("[[1, 2]]"), ROWS_EXPECTED),  # a list, not an object
    (json_form('{"rows": [[' + "9" * 400 + "]]}"),
     "a value in rows is too large for a number: expected values a float holds"),
    (binary([[1.0]], dtype=None), "missing field 'dtype'"),
    (binary([[1.0]], shape=None), "missing field 'shape'"),
    (binary([[1.0]], id=b"\xffr"), "field 'id' is not UTF-8 text"),
    (binary([[1.0]], id="bad id " + "x" * 60),
     f"id {'bad id ' + 'x' * 33!r} is invalid: expected 1-128 characters "
     "from A-Z a-z 0-9 _ . : -"),
    (binary([[1.0]], version=b"\xff"), "version '\ufffd' is invalid: expected a whole number"),
    ({**binary([[1.0]]), b"\xff": b"1"},
     "unknown field(s) ['\ufffd']: expected ['id', 'model', 'deadline_ms'] plus "
     "['version', 'dtype', 'shape', 'data', 'json']"),
])
def test_a_refusal_says_exactly_what_was_expected(fields: dict[bytes, bytes],
                                                  message: str) -> None:
    """A name or value that is not UTF-8 is refused like any other: a RequestError."""
    with pytest.raises(RequestError) as refused:
        parse(fields)
    assert str(refused.value) == message


def test_a_producer_may_send_rows_of_any_number_type_and_pin_a_version() -> None:
    rows = np.array([[1.5, -2.0], [3.0, 4.25]])  # float64, as numpy makes them
    for given in (rows, rows.tolist(), np.array([[1, 2], [3, 4]])):
        fields = encode_request("req-3", "alpha", given, NOW_MS)
        assert "version" not in fields
        request = parse(as_fields(fields))
        assert request.rows.dtype == np.float32
        np.testing.assert_array_equal(request.rows, np.asarray(given, dtype=np.float32))
    pinned = parse(as_fields(encode_request("req-4", "alpha", rows, NOW_MS, version=7)))
    assert pinned.version == 7


def test_rows_must_be_a_matrix() -> None:
    with pytest.raises(RequestError) as refused:
        encode_request("req-5", "alpha", np.zeros(3), NOW_MS)
    assert str(refused.value) == "rows must be a 2-D matrix, got 1 dimension(s)"


def test_json_rows_are_float32_read_as_the_doubles_json_means() -> None:
    """A JSON number is a double (as every JSON reader takes it), then float32: 2**54 +
    2**30 + 1 is the double 2**54 + 2**30, a tie that float32 rounds to even, 2**54; the
    integer straight to float32 would round up to 2**54 + 2**31."""
    request = parse(json_form(json.dumps({"rows": [[2**54 + 2**30 + 1, 1]]})))
    assert request.rows.dtype == np.float32
    assert request.rows.tolist() == [[2.0**54, 1.0]]


def test_a_reply_keeps_the_shape_and_float32_of_its_predictions() -> None:
    predictions = np.array([[0.25, 0.5, 0.75], [1.0, 1.5, 2.0]])  # float64, 2 x 3
    for as_json in (False, True):
        header, values = decode_reply(encode_reply({"status": "ok"}, predictions, as_json))
        assert header["shape"] == [2, 3]
        assert values is not None and values.dtype == np.float32
        np.testing.assert_array_equal(values, predictions.astype(np.float32))


def test_a_json_reply_is_strict_json_with_null_for_a_value_that_is_not_finite() -> None:
    payload = encode_reply({"status": "ok"}, np.array([np.nan, 0.5, np.inf]), True)
    document = json.loads(payload, parse_constant=pytest.fail)
    assert document["predictions"] == [None, 0.5, None]


def test_encode_ok_is_byte_for_byte_what_encode_reply_makes() -> None:
    predictions = np.array([[0.25], [0.75]])
    fast = encode_ok(ok_prefix("alpha", 3), "r-1.a:b_c", predictions)
    assert fast == encode_reply({"status": "ok", "model": "alpha", "version": 3,
                                 "id": "r-1.a:b_c"}, predictions, False)
    header, values = decode_reply(fast)
    assert header == {"status": "ok", "model": "alpha", "version": 3, "id": "r-1.a:b_c",
                      "shape": [2, 1]}
    np.testing.assert_array_equal(values, predictions.astype(np.float32))


def test_packed_commands_are_byte_for_byte_what_redis_py_sends() -> None:
    commands = [("EVAL", "return 1", 1, "ml:requests", b"\x00\xff", 60),
                ("BLPOP", "ml:reply:a-1", 5.0)]
    expected = b"".join(redis.Connection().pack_commands(commands))
    assert packed(commands) == expected
    assert packed([]) == b""
