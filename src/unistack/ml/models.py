"""Loaded models: the newest (or a pinned) version of every registered model, each in a
warmed-up backend, swapped for a newer version without failing a request.

A new version is loaded and warmed up beside the old one and then replaces it in one
assignment; a version that fails to load leaves the old one serving and is reported.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

from unistack.ml.backends import Backend, BackendError, make_backend
from unistack.ml.capability import Choice
from unistack.ml.registry import METADATA, ModelError, ModelRegistry, ModelVersion

log = logging.getLogger("unistack.ml")


# One XGBoost thread: the engine predicts small batches, where extra threads only spin
# (measured: 1.15 ms of CPU per single-row predict with one thread per core, 0.31 ms
# with one, for the same wall time); the other core serves Redis and the clients.
_OPTIONS: dict[str, dict[str, Any]] = {"xgboost": {"nthread": 1}}
Choose = Callable[[str], Choice]  # model kind -> its device, or why it cannot run here


def on_cpu(kind: str) -> Choice:
    """Every model kind on the CPU (tests; TensorRT then fails to load, saying why)."""
    return Choice("cpu", "CPU")


class Loaded(NamedTuple):
    version: ModelVersion
    backend: Backend

    @property
    def n_features(self) -> int:
        return len(self.version.feature_names)


class ModelStore:
    """Serves every model in the registry; `refresh()` picks up new versions."""

    def __init__(self, registry: ModelRegistry, choose: Choose,
                 report: Callable[[str, str], None] = lambda kind, detail: None,
                 pinned: dict[str, int] | None = None) -> None:
        self._registry = registry
        self._choose = choose
        self._report = report
        self._pinned = pinned or {}
        self._loaded: dict[str, Loaded] = {}
        # Versions that failed, with their files' signature when they did: an unchanged
        # one is not retried on every refresh, a repaired one (restored) is.
        self._failed: dict[tuple[str, int], tuple[int, ...]] = {}
        # Names with nothing to serve, and why (every version failed: checksum, load).
        self.unservable: dict[str, str] = {}
        self._why: dict[tuple[str, int], str] = {}
        self._lock = threading.Lock()

    def get(self, name: str, version: int | None = None) -> Loaded | None:
        loaded = self._loaded.get(name)
        if loaded is None or version is None or loaded.version.version == version:
            return loaded
        return None

    def names(self) -> list[str]:
        return sorted(self._loaded)

    def describe(self) -> dict[str, Any]:
        """Per model: the served version, and the backend (its library version apart)."""
        described = {}
        for name, loaded in sorted(self._loaded.items()):
            backend = loaded.backend.describe()
            backend["library_version"] = backend.pop("version", None)
            described[name] = {**backend, "version": loaded.version.version}
        return described

    def refresh(self) -> None:
        """Load any newer version; keep serving the old one if the new one fails; with
        nothing served yet, serve the newest version that loads (a corrupt newest one
        does not leave the model down while an older good one exists)."""
        with self._lock:
            for name in self._registry.names():
                try:
                    candidates = self._candidates(name)
                except ModelError as exc:
                    self._fail(name, 0, str(exc))
                    continue
                self._serve_first(name, candidates)

    def _candidates(self, name: str) -> list[ModelVersion]:
        """Versions to try, best first: the pinned one, or newest to oldest."""
        if name in self._pinned:
            return [self._registry.get(name, self._pinned[name])]
        return list(reversed(self._registry.versions(name)))

    def _serve_first(self, name: str, candidates: list[ModelVersion]) -> None:
        current = self._loaded.get(name)
        for wanted in candidates:
            if current and current.version.version >= wanted.version:
                break  # already serving this one, or better
            if self._failed.get((name, wanted.version)) != _signature(wanted) and self._load(
                    name, wanted, current):
                break
        if name in self._loaded:
            self.unservable.pop(name, None)
        elif candidates:
            self.unservable[name] = self._why.get((name, candidates[0].version), "")

    def _load(self, name: str, wanted: ModelVersion, current: Loaded | None) -> bool:
        try:
            self._registry.verify(wanted)
            kind = str(wanted.metadata["backend"])
            backend = make_backend(kind, self._device_for(kind), **_OPTIONS.get(kind, {}))
            backend.load(wanted.model_file)
            backend.warm_up(len(wanted.feature_names))
        except (ModelError, BackendError, OSError, ValueError) as exc:
            self._fail(name, wanted.version, str(exc), _signature(wanted))
            return False
        self._loaded[name] = Loaded(wanted, backend)  # the swap: one assignment
        before = f"v{current.version.version}" if current else "nothing"
        log.info("model %s: serving v%d (was %s)", name, wanted.version, before)
        self._report("model_loaded", f"{name} v{wanted.version} serving (was {before})")
        return True

    def _device_for(self, kind: str) -> str:
        try:
            choice = self._choose(kind)
        except ValueError as exc:  # a kind no backend knows
            raise BackendError(str(exc)) from None
        if choice.device is None:
            raise BackendError(f"model kind {kind!r} cannot run here: {choice.reason}")
        return choice.device

    def _fail(self, name: str, version: int, detail: str,
              signature: tuple[int, ...] = ()) -> None:
        self._failed[(name, version)] = signature
        self._why[(name, version)] = detail
        serving = self._loaded.get(name)
        still = f"; still serving v{serving.version.version}" if serving else ""
        log.error("model %s v%d failed to load: %s%s", name, version, detail, still)
        self._report("model_load_failed", f"{name} v{version}: {detail}{still}")


def _signature(model: ModelVersion) -> tuple[int, ...]:
    """What any rewrite of a version's files changes (ctime cannot be set back, so even a
    restore that keeps size and mtime counts): a repaired version is tried again."""
    signature: list[int] = []
    for path in (model.model_file, model.directory / METADATA):
        try:
            stat = path.stat()
        except OSError:
            signature += [-1, -1, -1]
            continue
        signature += [stat.st_ino, stat.st_size, stat.st_ctime_ns]
    return tuple(signature)
