"""The wire format of ML requests and replies, and the validation of every request.

A request is one entry of the request stream. Binary form (for programs):
    id, model, deadline_ms, dtype=float32, shape="<rows>,<cols>", data=<raw little-endian bytes>
JSON form (for a human with redis-cli):
    id, model, deadline_ms, json='{"rows": [[...], ...]}'
`version` (a pinned model version) is optional. Anything else is an error.

A reply is pushed to the list `ml:reply:<id>`: one JSON header line, then, for the
binary form, the predictions as raw float32 bytes; for the JSON form the predictions are
in the header. Every rejected request gets a reply that names what was expected and
what arrived; the model is never called with it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from typing import Any, NamedTuple

import hiredis
import numpy as np
from numpy.typing import NDArray

REPLY_PREFIX = "ml:reply:"
REQUEST_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_SHAPE = re.compile(r"([0-9]{1,9}),([0-9]{1,9})")
REQUIRED = ("id", "model", "deadline_ms")
OPTIONAL = ("version", "dtype", "shape", "data", "json")

OK, INVALID, EXPIRED, FAILED = "ok", "invalid", "expired", "failed"


class Limits(NamedTuple):
    max_rows: int = 65536
    max_bytes: int = 16 * 2**20


class RequestError(Exception):
    """A request that cannot be served; the message says what was expected."""


class Request(NamedTuple):
    id: str
    model: str
    version: int | None
    deadline_ms: int
    rows: NDArray[np.float32]
    as_json: bool


def _text(fields: dict[bytes, bytes], name: str) -> str:
    try:
        return fields[name.encode()].decode()
    except KeyError:
        raise RequestError(f"missing field {name!r}") from None
    except UnicodeDecodeError:
        raise RequestError(f"field {name!r} is not UTF-8 text") from None


def _check_fields(fields: dict[bytes, bytes]) -> None:
    names = {key.decode(errors="replace") for key in fields}
    unknown = sorted(names - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise RequestError(f"unknown field(s) {unknown}: expected {list(REQUIRED)} "
                           f"plus {list(OPTIONAL)}")
    missing = [name for name in REQUIRED if name not in names]
    if missing:
        raise RequestError(f"missing field(s) {missing}")
    if ("json" in names) == ("data" in names):
        raise RequestError("expected exactly one of 'data' (with dtype and shape) or 'json'")


def _binary_rows(fields: dict[bytes, bytes], limits: Limits) -> NDArray[np.float32]:
    dtype = _text(fields, "dtype")
    if dtype != "float32":
        raise RequestError(f"dtype {dtype!r} is not supported: expected 'float32'")
    shape = _text(fields, "shape")
    match = _SHAPE.fullmatch(shape)
    if not match:
        raise RequestError(f"shape {shape!r} is invalid: expected '<rows>,<columns>'")
    rows, columns = int(match.group(1)), int(match.group(2))
    data = fields[b"data"]
    if len(data) > limits.max_bytes:
        raise RequestError(f"data is {len(data)} bytes: at most {limits.max_bytes} allowed")
    if len(data) != rows * columns * 4:
        raise RequestError(f"data is {len(data)} bytes but shape {rows},{columns} of float32 "
                           f"needs {rows * columns * 4}")
    return np.frombuffer(data, dtype="<f4").reshape(rows, columns)


def _json_rows(fields: dict[bytes, bytes], limits: Limits) -> NDArray[np.float32]:
    raw = fields[b"json"]
    if len(raw) > limits.max_bytes:
        raise RequestError(f"json is {len(raw)} bytes: at most {limits.max_bytes} allowed")
    try:
        document = json.loads(raw, parse_constant=_refuse_constant)
    except ValueError as exc:
        raise RequestError(f"json is not valid JSON: {exc}") from None
    rows = document.get("rows") if isinstance(document, dict) else None
    if not isinstance(rows, list) or not rows or not all(isinstance(r, list) for r in rows):
        raise RequestError('json must be {"rows": [[number, ...], ...]} with at least one row')
    widths = {len(row) for row in rows}
    if len(widths) != 1:
        raise RequestError(f"rows have different lengths {sorted(widths)}: expected one length")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for r in rows for v in r):
        raise RequestError("every value in rows must be a number")
    try:
        return np.asarray(rows, dtype=np.float64).astype(np.float32)
    except OverflowError:  # a JSON integer too large for a float
        raise RequestError("a value in rows is too large for a number: expected values "
                           "a float holds") from None


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a finite number")


DEFAULT_LIMITS = Limits()
# A whole number as version and deadline_ms are written: ASCII digits (str.isdigit also
# takes "²", which int() refuses), at most 18 of them.
_WHOLE = re.compile(r"[0-9]{1,18}")


# The field sets of a well-formed binary request: checked with one set comparison.
_BINARY = frozenset(name.encode() for name in (*REQUIRED, "dtype", "shape", "data"))
_BINARY_PINNED = _BINARY | {b"version"}


def parse(fields: dict[bytes, bytes], limits: Limits = DEFAULT_LIMITS) -> Request:
    """Validate one stream entry into a Request, or raise RequestError saying why."""
    names = fields.keys()
    if names not in (_BINARY, _BINARY_PINNED):
        _check_fields(fields)
    request_id = _text(fields, "id")
    if not REQUEST_ID.fullmatch(request_id):
        raise RequestError(f"id {request_id[:40]!r} is invalid: expected 1-128 characters "
                           "from A-Z a-z 0-9 _ . : -")
    version_text = fields.get(b"version", b"").decode(errors="replace")
    if version_text and not _WHOLE.fullmatch(version_text):
        raise RequestError(f"version {version_text!r} is invalid: expected a whole number")
    deadline = _text(fields, "deadline_ms")
    if not _WHOLE.fullmatch(deadline):
        raise RequestError(f"deadline_ms {deadline!r} is invalid: expected epoch milliseconds")
    as_json = b"json" in fields
    rows = _json_rows(fields, limits) if as_json else _binary_rows(fields, limits)
    _check_values(rows, limits)
    return Request(request_id, _text(fields, "model"),
                   int(version_text) if version_text else None, int(deadline), rows, as_json)


def _check_values(rows: NDArray[np.float32], limits: Limits) -> None:
    if rows.shape[0] == 0 or rows.shape[1] == 0:
        raise RequestError(f"shape {rows.shape[0]},{rows.shape[1]} is empty: expected at "
                           "least one row and one column")
    if rows.shape[0] > limits.max_rows:
        raise RequestError(f"{rows.shape[0]} rows: at most {limits.max_rows} per request")
    finite = np.isfinite(rows)
    if not finite.all():
        row, column = (int(i) for i in np.argwhere(~finite)[0])
        raise RequestError(f"value at row {row}, column {column} is {rows[row, column]}: "
                           "expected a finite number")


def check_features(request: Request, expected: int) -> None:
    columns = request.rows.shape[1]
    if columns != expected:
        raise RequestError(f"{columns} features per row, but model {request.model!r} "
                           f"expects {expected}")


def encode_request(request_id: str, model: str, rows: NDArray[Any], deadline_ms: int,
                   version: int | None = None) -> dict[str, Any]:
    """Stream fields of a binary request (what a producer XADDs)."""
    matrix = np.ascontiguousarray(rows, dtype="<f4")
    if matrix.ndim != 2:
        raise RequestError(f"rows must be a 2-D matrix, got {matrix.ndim} dimension(s)")
    fields: dict[str, Any] = {"id": request_id, "model": model, "deadline_ms": deadline_ms,
                              "dtype": "float32", "shape": f"{matrix.shape[0]},{matrix.shape[1]}",
                              "data": matrix.tobytes()}
    if version is not None:
        fields["version"] = version
    return fields


def encode_reply(header: dict[str, Any], predictions: NDArray[Any] | None, as_json: bool) -> bytes:
    """A reply: a JSON header line, then raw float32 predictions for binary requests."""
    if predictions is not None:
        values = np.ascontiguousarray(predictions, dtype="<f4")
        header = {**header, "shape": list(values.shape)}
        if as_json:
            header["predictions"] = [_finite_or_none(v) for v in values.ravel().tolist()]
            return json.dumps(header).encode()
        return json.dumps(header).encode() + b"\n" + values.tobytes()
    return json.dumps(header).encode()


def ok_prefix(model: str, version: int) -> bytes:
    """The start of every `ok` reply header of one model version (see encode_ok)."""
    return json.dumps({"status": OK, "model": model, "version": version})[:-1].encode()


def encode_ok(prefix: bytes, request_id: str, predictions: NDArray[Any]) -> bytes:
    """What encode_reply makes of an `ok` binary reply, without a json.dumps per reply.

    REQUEST_ID admits no character that JSON would escape, so the id is written as is."""
    values = np.ascontiguousarray(predictions, dtype="<f4")
    shape = ", ".join(map(str, values.shape))
    return b'%s, "id": "%s", "shape": [%s]}\n%s' % (prefix, request_id.encode(),
                                                   shape.encode(), values.tobytes())


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def decode_reply(payload: bytes) -> tuple[dict[str, Any], NDArray[np.float32] | None]:
    header_bytes, _, body = payload.partition(b"\n")
    header: dict[str, Any] = json.loads(header_bytes)
    if header.get("status") != OK:
        return header, None
    shape = tuple(header["shape"])
    if "predictions" in header:
        return header, np.asarray(header["predictions"], dtype=np.float32).reshape(shape)
    return header, np.frombuffer(body, dtype="<f4").reshape(shape)


def packed(commands: Iterable[tuple[Any, ...]]) -> bytes:
    """COMMANDS in the Redis protocol, packed by hiredis (redis-py's own packing costs
    about 7 µs more per command: it re-encodes every argument in Python)."""
    return b"".join(map(hiredis.pack_command, commands))
