"""MLClient: send feature rows to the engine through Redis and get predictions back.

    MLClient(settings).predict(rows, model="default", timeout=1.0) -> numpy array

Every failure is an exception that says why: `Expired` (past its deadline), `Invalid`
(the engine refused the input, with its reason), `BacklogFull` (too many requests
waiting: shed load instead of queueing forever), `Failed` (dead-lettered),
`PredictionTimeout` (no answer in time), `Unavailable` (Redis cannot be reached),
`Refused` (Redis refused the request, e.g. out of memory).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import numpy as np
import redis
from numpy.typing import NDArray
from redis.backoff import NoBackoff
from redis.retry import Retry

from unistack.config import Settings
from unistack.ml import protocol
from unistack.ml.keys import STREAM, STREAM_RESET


class PredictionError(Exception):
    """The engine could not answer; subclasses say why."""


class Expired(PredictionError):
    pass


class Invalid(PredictionError):
    pass


class Failed(PredictionError):
    pass


class BacklogFull(PredictionError):
    pass


class PredictionTimeout(PredictionError):
    pass


class Unavailable(PredictionError):
    pass


class Refused(PredictionError):
    pass


_ERRORS = {protocol.EXPIRED: Expired, protocol.INVALID: Invalid, protocol.FAILED: Failed}


# KEYS: the request stream, the reply list. ARGV: the backlog limit, the reply TTL, then
# the request's field/value pairs. Admission and XADD are one atomic step, so the stream
# never holds more than the limit (from MLClient); a refusal goes on the reply list, where
# the BLPOP sent in the same round trip finds it at once.
_SUBMIT = """
local backlog = redis.call('XLEN', KEYS[1])
if backlog >= tonumber(ARGV[1]) then
  redis.call('RPUSH', KEYS[2], cjson.encode({status = 'backlog', backlog = backlog}))
  redis.call('EXPIRE', KEYS[2], ARGV[2])
  return backlog
end
redis.call('XADD', KEYS[1], '*', unpack(ARGV, 3))
return -1
"""
_REFUSAL_TTL_S = 10


class MLClient:
    """One producer: one request at a time on a connection of its own (not thread-safe;
    give each thread its own client)."""

    def __init__(self, settings: Settings, max_backlog: int = 100_000) -> None:
        # No retries (a resent submit would be a second request) and no socket timeout
        # (the BLPOP's own timeout bounds the wait). A Redis that dies mid-wait resets the
        # connection, which raises at once.
        self._connection = redis.Connection(
            host=settings.redis_host, port=settings.redis_port, password=settings.redis_password,
            socket_timeout=None, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0))
        self._where = f"{settings.redis_host}:{settings.redis_port}"
        self._max_backlog = max_backlog
        self._prefix = uuid.uuid4().hex[:12]
        self._sequence = 0

    def predict(self, rows: Any, model: str = "default", timeout: float = 1.0,
                version: int | None = None, deadline: float | None = None,
                ) -> NDArray[np.float32]:
        """Predictions for ROWS (a [n, d] matrix, or one row) within TIMEOUT seconds.

        DEADLINE (epoch seconds, default now + TIMEOUT) is when an answer stops being
        useful: a request the engine reads later is answered `expired`, never predicted."""
        matrix = np.asarray(rows, dtype=np.float32)
        if matrix.ndim == 1:
            matrix = matrix.reshape(1, -1)
        self._sequence += 1
        request_id = f"{self._prefix}-{self._sequence}"
        deadline_ms = int(((time.time() + timeout) if deadline is None else deadline) * 1000)
        fields = protocol.encode_request(request_id, model, matrix, deadline_ms, version)
        reply = self._round_trip(request_id, fields, timeout)
        header, predictions = protocol.decode_reply(reply)
        if predictions is None:
            raise _error(request_id, header, self._max_backlog)
        return predictions

    def close(self) -> None:
        self._connection.disconnect()

    def _fresh_connection(self) -> redis.Connection:
        """The connection, reconnected first if Redis closed it while idle (a restart):
        a request is never sent down a socket that is known to be dead."""
        connection = self._connection
        try:
            stale = connection._sock is not None and connection.can_read(timeout=0)
        except (redis.ConnectionError, OSError):
            stale = True
        if stale:
            connection.disconnect()
        return connection

    def _round_trip(self, request_id: str, fields: dict[str, Any], timeout: float) -> bytes:
        """Submit and wait for the reply in one round trip: Redis runs the BLPOP sent
        behind the script right after it, on the same connection."""
        key = protocol.REPLY_PREFIX + request_id
        flat = [part for pair in fields.items() for part in pair]
        commands = [("EVAL", _SUBMIT, 2, STREAM, key, self._max_backlog, _REFUSAL_TTL_S, *flat),
                    ("BLPOP", key, max(timeout, 0.01))]
        connection = self._fresh_connection()
        try:
            connection.send_packed_command([protocol.packed(commands)])
            connection.read_response()  # the script's answer; an error reply raises
            reply: Any = connection.read_response()
        except redis.ResponseError as exc:
            connection.disconnect()  # its BLPOP would wait out the timeout: drop it
            raise Refused(f"request {request_id}: Redis refused it: {exc}") from exc
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            connection.disconnect()
            raise Unavailable(f"request {request_id}: Redis at {self._where} cannot be reached "
                              f"({exc}); is the stack running? (`unistack status`)") from exc
        if reply is None:
            raise PredictionTimeout(self._unanswered(connection, request_id, timeout))
        return bytes(reply[1])

    def _unanswered(self, connection: Any, request_id: str, timeout: float) -> str:
        """Why no answer came: the stream was reset while the request waited, or not known."""
        sent = time.time() - timeout
        try:
            connection.send_command("GET", STREAM_RESET)
            reset = connection.read_response()
        except (redis.RedisError, OSError):
            reset = None
        if reset is not None and int(reset) / 1000 >= sent - 1:
            return (f"request {request_id} was lost: the request stream was reset (a FLUSHALL, "
                    "a restore or Redis restarted empty) while it waited; resubmit it")
        return (f"no answer to request {request_id} within {timeout:g} s; "
                "is the ml_engine running? (`unistack status`)")


def _error(request_id: str, header: dict[str, Any], limit: int) -> PredictionError:
    status = str(header.get("status"))
    if status == "backlog":
        return BacklogFull(f"{header.get('backlog')} requests are waiting (limit {limit}); "
                           "the engine is behind or down: shed load and retry later")
    error = _ERRORS.get(status, PredictionError)
    return error(f"request {request_id}: {status}: {header.get('error')}")
