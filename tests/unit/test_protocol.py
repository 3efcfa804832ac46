"""The ML wire format: every bad request is refused with what was expected."""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import pytest

from unistack.ml.protocol import (
    Limits,
    RequestError,
    check_features,
    decode_reply,
    encode_reply,
    encode_request,
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
