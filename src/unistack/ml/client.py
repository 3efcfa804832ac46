"""MLClient: send feature rows to the engine through Redis and get predictions back.

    MLClient(settings).predict(rows, model="default", timeout=1.0) -> numpy array

Every failure is an exception that says why: `Expired` (past its deadline), `Invalid`
(the engine refused the input, with its reason), `BacklogFull` (too many requests
waiting: shed load instead of queueing forever), `Failed` (dead-lettered),
`PredictionTimeout` (no answer in time).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import numpy as np
import redis
from numpy.typing import NDArray

from unistack.config import LOOPBACK, Settings
from unistack.ml import protocol
from unistack.ml.engine import STREAM


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


_ERRORS = {protocol.EXPIRED: Expired, protocol.INVALID: Invalid, protocol.FAILED: Failed}


class MLClient:
    def __init__(self, settings: Settings, max_backlog: int = 100_000,
                 client: redis.Redis | None = None) -> None:
        self._redis = client or redis.Redis(host=LOOPBACK, port=settings.redis_port,
                                            password=settings.redis_password)
        self._max_backlog = max_backlog
        self._prefix = uuid.uuid4().hex[:12]
        self._sequence = 0

    def predict(self, rows: Any, model: str = "default", timeout: float = 1.0,
                version: int | None = None) -> NDArray[np.float32]:
        """Predictions for ROWS (a [n, d] matrix, or one row) within TIMEOUT seconds."""
        matrix = np.asarray(rows, dtype=np.float32)
        if matrix.ndim == 1:
            matrix = matrix.reshape(1, -1)
        self._sequence += 1
        request_id = f"{self._prefix}-{self._sequence}"
        deadline_ms = int((time.time() + timeout) * 1000)
        fields = protocol.encode_request(request_id, model, matrix, deadline_ms, version)
        self._send(fields)
        return self._receive(request_id, timeout)

    def _send(self, fields: dict[Any, Any]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        pipe.xlen(STREAM)
        pipe.xadd(STREAM, fields, maxlen=self._max_backlog * 2, approximate=True)
        backlog, entry_id = pipe.execute()
        if backlog >= self._max_backlog:
            self._redis.xdel(STREAM, entry_id)  # withdraw it: the caller is told to shed
            raise BacklogFull(f"{backlog} requests are waiting (limit {self._max_backlog}); "
                              "the engine is behind or down: shed load and retry later")

    def _receive(self, request_id: str, timeout: float) -> NDArray[np.float32]:
        key = protocol.REPLY_PREFIX + request_id
        reply: Any = self._redis.blpop([key], timeout=max(timeout, 0.01))
        if reply is None:
            raise PredictionTimeout(f"no answer to request {request_id} within {timeout:g} s; "
                                    "is the ml_engine running? (`unistack status`)")
        header, predictions = protocol.decode_reply(reply[1])
        if predictions is None:
            error = _ERRORS.get(str(header.get("status")), PredictionError)
            raise error(f"request {request_id}: {header.get('status')}: {header.get('error')}")
        return predictions
