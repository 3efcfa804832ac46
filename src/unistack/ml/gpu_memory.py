"""GPU memory pressure: read the usage, relieve it in progressive levels, report each step.

`PressurePolicy` is the pure decision (no I/O, no clock reads): three `policy.Threshold`
levels with hysteresis — warn, then free caches, then halve the engine's batch cap down
to a floor, restoring it stepwise once usage is back below the top level by the margin.
`GpuMemoryManager` is the edge the engine calls periodically: it reads, asks the policy,
applies the steps through `MemoryActions`, reports each one and never raises. The
readers (NVML, CuPy's pool) and `DefaultActions` never raise either.
"""

from __future__ import annotations

import gc
import importlib
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from unistack.policy import Threshold

log = logging.getLogger("unistack.ml")

Importer = Callable[[str], Any]
Report = Callable[[str, str, str], None]  # (kind, severity, detail)

# Report kinds, one per step, so the hub can raise one event per step.
HIGH = "gpu_memory"  # usage crossed the first level
NORMAL = "gpu_memory_ok"  # usage back below the first level by the margin
FREED = "gpu_memory_freed"  # second level crossed: caches freed
SHRUNK = "gpu_batch_shrunk"  # top level: max batch halved
RESTORED = "gpu_batch_restored"  # below the top level again: max batch doubled
UNREADABLE = "gpu_memory_unreadable"  # no reading: nothing changes until one comes back
READABLE = "gpu_memory_readable"


class MemoryUsage(NamedTuple):
    used_bytes: int
    total_bytes: int
    source: str  # "nvml" or "cupy_pool"

    @property
    def ratio(self) -> float:
        return self.used_bytes / self.total_bytes

    def describe(self) -> str:
        return (f"GPU memory {self.ratio:.0%} used ({self.used_bytes / 2**30:.1f} of "
                f"{self.total_bytes / 2**30:.1f} GiB, {self.source})")


Reader = Callable[[], MemoryUsage | None]


class MemoryState(NamedTuple):
    """What /metrics shows; ratio None until the first reading."""

    ratio: float | None
    level: int  # 0 (normal) .. 3 (shrinking the batch)
    max_batch: int
    used_bytes: int = 0
    total_bytes: int = 0
    source: str = ""


class MemoryActions(Protocol):
    def free_caches(self) -> str:
        """Free what the libraries cache; one line saying what was freed."""

    def set_max_batch(self, rows: int) -> None:
        """Change the engine's batch cap."""


@dataclass(frozen=True)
class PressureConfig:
    levels: tuple[float, float, float] = (0.80, 0.90, 0.95)  # warn, free caches, shrink
    margin: float = 0.05  # a level clears only this far below it
    shrink_every: float = 5.0  # seconds between two halvings while above the top level
    restore_every: float = 30.0  # seconds between two doublings once below it again
    min_batch: int = 16  # the floor of the batch cap

    def __post_init__(self) -> None:
        if not 0 < self.levels[0] < self.levels[1] < self.levels[2]:
            raise ValueError(f"levels must rise and be positive, got {self.levels}")
        if self.margin < 0 or self.min_batch < 1:
            raise ValueError("margin must be >= 0 and min_batch >= 1")


DEFAULT_PRESSURE = PressureConfig()


class Step(NamedTuple):
    kind: str  # one of the report kinds above
    severity: str
    detail: str
    rows: int = 0  # for SHRUNK and RESTORED: the new batch cap


class PressurePolicy:
    """The levels and the batch cap. `observe` returns the steps one reading calls for."""

    def __init__(self, max_batch: int, config: PressureConfig = DEFAULT_PRESSURE) -> None:
        self._config = config
        self.original = max_batch
        self.max_batch = max_batch
        self._floor = min(config.min_batch, max_batch)
        self._levels = tuple(Threshold(limit, config.margin) for limit in config.levels)
        self._next_resize = 0.0

    @property
    def level(self) -> int:
        return max((i + 1 for i, t in enumerate(self._levels) if t.raised), default=0)

    def observe(self, usage: MemoryUsage, now: float) -> list[Step]:
        warn, free, shrink = (t.update(usage.ratio) for t in self._levels)
        steps = self._warning(warn, usage)
        if free == "raised":  # OK -> FREEING: once per crossing
            steps.append(Step(FREED, "warning", f"{usage.describe()}: "
                              f"above {self._levels[1].limit:.0%}, freeing caches"))
        return steps + self._resize(shrink, usage, now)

    def _warning(self, change: str | None, usage: MemoryUsage) -> list[Step]:
        limit = self._levels[0].limit
        if change == "raised":  # OK -> HIGH
            return [Step(HIGH, "warning", f"{usage.describe()}: above {limit:.0%}")]
        if change == "cleared":  # HIGH -> OK
            back = limit - self._config.margin
            return [Step(NORMAL, "info", f"{usage.describe()}: back below {back:.0%}")]
        return []

    def _resize(self, change: str | None, usage: MemoryUsage, now: float) -> list[Step]:
        if change == "raised":
            return self._halve(usage, now)  # OK -> SHRINKING: at once on a crossing
        if change == "cleared":
            # SHRINKING -> RESTORING, after a pause: the freed memory may not stay free.
            self._next_resize = now + self._config.restore_every
            return []
        if now < self._next_resize:
            return []
        if self._levels[2].raised:
            return self._halve(usage, now)
        if self.max_batch < self.original:
            return self._double(usage, now)
        return []

    def _halve(self, usage: MemoryUsage, now: float) -> list[Step]:
        if self.max_batch <= self._floor:
            return []
        before, self.max_batch = self.max_batch, max(self._floor, self.max_batch // 2)
        self._next_resize = now + self._config.shrink_every
        floor = " (the floor)" if self.max_batch == self._floor else ""
        return [Step(SHRUNK, "warning", f"{usage.describe()}, top level "
                     f"{self._levels[2].limit:.0%} raised: max batch {before} -> "
                     f"{self.max_batch} rows{floor}", self.max_batch)]

    def _double(self, usage: MemoryUsage, now: float) -> list[Step]:
        before, self.max_batch = self.max_batch, min(self.original, self.max_batch * 2)
        self._next_resize = now + self._config.restore_every
        return [Step(RESTORED, "info", f"{usage.describe()}: max batch {before} -> "
                     f"{self.max_batch} of {self.original} rows", self.max_batch)]


def log_report(kind: str, severity: str, detail: str) -> None:
    level = {"info": logging.INFO, "warning": logging.WARNING}.get(severity, logging.ERROR)
    log.log(level, "%s: %s", kind, detail)


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


class GpuMemoryManager:
    """Watches GPU memory for the engine: call `check()` periodically; it never raises."""

    def __init__(
        self, read_usage: Reader, actions: MemoryActions, max_batch: int, *,
        config: PressureConfig = DEFAULT_PRESSURE,
        clock: Callable[[], float] = time.monotonic, report: Report = log_report,
    ) -> None:
        self._read = read_usage
        self._actions = actions
        self._policy = PressurePolicy(max_batch, config)
        self._clock = clock
        self._report = report
        self._unreadable = False
        self.state = MemoryState(None, 0, max_batch)

    def check(self) -> MemoryState:
        """Read, decide, act; the state for /metrics (unchanged when nothing was read)."""
        usage = self._observe()
        if usage is None:
            return self.state
        for step in self._policy.observe(usage, self._clock()):
            self._apply(step)
        self.state = MemoryState(usage.ratio, self._policy.level, self._policy.max_batch,
                                 usage.used_bytes, usage.total_bytes, usage.source)
        return self.state

    def _observe(self) -> MemoryUsage | None:
        try:
            usage = self._read()
            if usage is not None and usage.total_bytes <= 0:
                raise ValueError(f"total_bytes is {usage.total_bytes}")
        except Exception as exc:
            self._unread(_why(exc))
            return None
        if usage is None:
            self._unread("no source answered")
            return None
        if self._unreadable:
            self._unreadable = False  # UNREADABLE -> READABLE
            self._report(READABLE, "info", f"{usage.describe()}: readable again")
        return usage

    def _unread(self, why: str) -> None:
        if not self._unreadable:
            self._unreadable = True  # READABLE -> UNREADABLE: one report per outage
            self._report(UNREADABLE, "warning",
                         f"cannot read GPU memory ({why}); levels and batch cap unchanged")

    def _apply(self, step: Step) -> None:
        detail = step.detail
        try:
            if step.kind == FREED:
                detail = f"{detail}: {self._actions.free_caches()}"
            elif step.kind in (SHRUNK, RESTORED):
                self._actions.set_max_batch(step.rows)
        except Exception as exc:
            log.exception("GPU memory action %s failed", step.kind)
            detail = f"{detail}; the action failed: {_why(exc)}"
        self._report(step.kind, step.severity, detail)


# --- readers ---------------------------------------------------------------------------


class _LibraryReader:
    """Opens a library once, then reads it on each call. Never raises: a failure reads as
    None with one log line (a failed open is final; read failures log once per streak)."""

    def __init__(self, label: str, open_: Callable[[], Any],
                 read: Callable[[Any], MemoryUsage]) -> None:
        self._label, self._open, self._read = label, open_, read
        self._handle: Any = None
        self._state = "new"  # new -> open | closed (the open failed); open <-> failing

    def __call__(self) -> MemoryUsage | None:
        if self._state == "new":
            self._open_once()
        if self._state == "closed":
            return None
        try:
            usage = self._read(self._handle)
        except Exception as exc:
            if self._state != "failing":
                log.warning("%s: cannot read GPU memory: %s", self._label, _why(exc))
            self._state = "failing"
            return None
        self._state = "open"
        return usage

    def _open_once(self) -> None:
        try:
            self._handle = self._open()
            self._state = "open"
        except Exception as exc:
            self._state = "closed"
            log.warning("%s: GPU memory not readable: %s", self._label, _why(exc))


def nvml_reader(importer: Importer = importlib.import_module, device: int = 0) -> Reader:
    """DEVICE's memory from NVML, every process on it counted; nvmlInit runs once."""

    def open_() -> tuple[Any, Any]:
        pynvml = importer("pynvml")
        pynvml.nvmlInit()
        return pynvml, pynvml.nvmlDeviceGetHandleByIndex(device)

    def read(opened: tuple[Any, Any]) -> MemoryUsage:
        pynvml, handle = opened
        memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
        return MemoryUsage(int(memory.used), int(memory.total), "nvml")

    return _LibraryReader("NVML", open_, read)


def cupy_pool_reader(importer: Importer = importlib.import_module) -> Reader:
    """The fallback: bytes in use in CuPy's default pool, of its limit (or of the device).

    Cached free blocks are not counted: the pool reuses them. The pool's own total_bytes()
    is not the denominator: right after a free it equals used_bytes(), a ratio of 1.0."""

    def read(cupy: Any) -> MemoryUsage:
        pool = cupy.get_default_memory_pool()
        total = int(pool.get_limit()) or int(cupy.cuda.runtime.memGetInfo()[1])
        return MemoryUsage(int(pool.used_bytes()), total, "cupy_pool")

    return _LibraryReader("cupy", lambda: importer("cupy"), read)


def first_reading(*readers: Reader) -> Reader:
    """A reader that answers with the first of READERS that reads something."""

    def read() -> MemoryUsage | None:
        return next((usage for usage in (r() for r in readers) if usage is not None), None)

    return read


# --- actions ---------------------------------------------------------------------------


def imported_only(name: str) -> Any:
    """An importer that loads nothing: a library not imported yet holds no GPU memory, and
    importing TensorFlow just to clear it would cost seconds and memory."""
    module = sys.modules.get(name)
    if module is None:
        raise ModuleNotFoundError(f"{name} is not imported", name=name)
    return module


def _clear_keras(tf: Any) -> str:
    # Drops Keras' global graph state; TensorFlow's allocator keeps its device memory
    # (only recycling the process returns that).
    tf.keras.backend.clear_session()
    return "keras session cleared"


def _free_cupy(cupy: Any) -> str:
    pool = cupy.get_default_memory_pool()
    before = int(pool.total_bytes())
    pool.free_all_blocks()  # split blocks stay until all their parts are free
    cupy.get_default_pinned_memory_pool().free_all_blocks()
    after = int(pool.total_bytes())
    return f"pool {before / 2**20:.0f} -> {after / 2**20:.0f} MiB held, pinned pool freed"


class DefaultActions:
    """Frees the caches of the GPU libraries this process has imported; batch cap changes
    go to the engine's callback."""

    def __init__(self, set_max_batch: Callable[[int], None],
                 importer: Importer = imported_only,
                 collect: Callable[[], int] = gc.collect) -> None:
        self._set_max_batch = set_max_batch
        self._importer = importer
        self._collect = collect

    def set_max_batch(self, rows: int) -> None:
        self._set_max_batch(rows)

    def free_caches(self) -> str:
        # Order matters: Keras drops its references, gc frees the arrays nobody holds,
        # and only then does CuPy's pool have free blocks to give back.
        parts = [self._guarded("tensorflow", lambda: _clear_keras(self._importer("tensorflow"))),
                 self._guarded("gc", lambda: f"{self._collect()} objects collected"),
                 self._guarded("cupy", lambda: _free_cupy(self._importer("cupy")))]
        return "; ".join(part for part in parts if part)

    def _guarded(self, name: str, free: Callable[[], str]) -> str:
        """NAME: what FREE freed; '' when NAME is not loaded; never raises."""
        try:
            return f"{name}: {free()}"
        except ModuleNotFoundError as exc:
            if exc.name == name:
                return ""
            return self._failed(name, exc)
        except Exception as exc:
            return self._failed(name, exc)

    def _failed(self, name: str, exc: Exception) -> str:
        log.warning("freeing %s caches failed: %s", name, _why(exc))
        return f"{name}: failed: {_why(exc)}"
