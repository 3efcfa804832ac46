"""Request load for chaos tests: producer threads that count answers and failures."""

from __future__ import annotations

import threading
from types import TracebackType

import numpy as np

from unistack.config import Settings
from unistack.ml.client import MLClient


class RequestLoad:
    """`with RequestLoad(settings, producers, rows) as load:` sends requests back to back
    from PRODUCERS threads until the block ends; `load.answered`, `load.failures`."""

    def __init__(self, settings: Settings, producers: int, rows: int, timeout: float) -> None:
        self.answered = 0
        self.failures: list[BaseException] = []
        self._settings, self._rows, self._timeout = settings, rows, timeout
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._produce) for _ in range(producers)]

    def _produce(self) -> None:
        client = MLClient(self._settings)
        rows = np.zeros((self._rows, 8), np.float32)
        while not self._stop.is_set():
            try:
                client.predict(rows, timeout=self._timeout)
                with self._lock:
                    self.answered += 1
            except Exception as exc:  # the tests assert there were none
                self.failures.append(exc)

    def __enter__(self) -> RequestLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(20)
