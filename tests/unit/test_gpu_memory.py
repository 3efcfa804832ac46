"""GPU memory pressure: the levels with hysteresis and the batch cap, driven by a list of
readings, a fake clock and fake actions; the readers and DefaultActions with fake
pynvml, cupy and tensorflow modules."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from types import SimpleNamespace
from typing import Any

import pytest

from unistack.ml.gpu_memory import (
    FREED,
    HIGH,
    NORMAL,
    READABLE,
    RESTORED,
    SHRUNK,
    UNREADABLE,
    DefaultActions,
    GpuMemoryManager,
    MemoryState,
    MemoryUsage,
    PressureConfig,
    cupy_pool_reader,
    first_reading,
    imported_only,
    nvml_reader,
)

GIB = 2**30
TOTAL = 100 * GIB
CONFIG = PressureConfig(levels=(0.80, 0.90, 0.95), margin=0.05, shrink_every=5.0,
                        restore_every=10.0, min_batch=16)


def usage(ratio: float) -> MemoryUsage:
    return MemoryUsage(round(ratio * TOTAL), TOTAL, "fake")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


Reading = float | MemoryUsage | Exception | None


class Readings:
    """A reader fed by the test: a ratio, a usage, None (nothing read) or an exception."""

    def __init__(self) -> None:
        self.next: Reading = 0.5

    def __call__(self) -> MemoryUsage | None:
        if isinstance(self.next, Exception):
            raise self.next
        return usage(self.next) if isinstance(self.next, float) else self.next


class Actions:
    def __init__(self) -> None:
        self.frees = 0
        self.batches: list[int] = []

    def free_caches(self) -> str:
        self.frees += 1
        return "freed 3 GiB"

    def set_max_batch(self, rows: int) -> None:
        self.batches.append(rows)


class World:
    def __init__(self, max_batch: int = 256) -> None:
        self.clock, self.readings, self.actions = Clock(), Readings(), Actions()
        self.reports: list[tuple[str, str, str]] = []
        self.manager = GpuMemoryManager(self.readings, self.actions, max_batch, config=CONFIG,
                                        clock=self.clock,
                                        report=lambda *r: self.reports.append(r))

    def feed(self, ratios: Iterable[Reading], every: float = 1.0) -> MemoryState:
        state = self.manager.state
        for ratio in ratios:
            self.readings.next = ratio
            state = self.manager.check()
            self.clock.now += every
        return state

    def kinds(self) -> list[str]:
        return [kind for kind, _, _ in self.reports]


# --- levels with hysteresis --------------------------------------------------------------


def test_warning_once_per_crossing_while_usage_hovers_at_the_line() -> None:
    world = World()
    world.feed([0.79, 0.81, 0.79, 0.80, 0.81, 0.76, 0.751, 0.80])
    assert world.kinds() == [HIGH]
    world.feed([0.749, 0.74, 0.79])  # past the margin: cleared once
    assert world.kinds() == [HIGH, NORMAL]
    world.feed([0.81, 0.80])
    assert world.kinds() == [HIGH, NORMAL, HIGH]
    assert [severity for _, severity, _ in world.reports] == ["warning", "info", "warning"]
    assert "81% used" in world.reports[0][2] and "above 80%" in world.reports[0][2]


def test_free_caches_once_per_crossing_and_the_result_is_reported() -> None:
    world = World()
    world.feed([0.91, 0.89, 0.90, 0.86, 0.851, 0.92])
    assert world.actions.frees == 1
    world.feed([0.849, 0.91, 0.90])
    assert world.actions.frees == 2
    freed = [detail for kind, _, detail in world.reports if kind == FREED]
    assert len(freed) == 2 and all(d.endswith("freeing caches: freed 3 GiB") for d in freed)
    assert world.actions.batches == []  # below the top level: the batch cap stays


def test_a_jump_to_the_top_takes_every_step_in_order() -> None:
    world = World()
    state = world.feed([0.97])
    assert world.kinds() == [HIGH, FREED, SHRUNK]
    assert state.ratio == pytest.approx(0.97)
    assert state == MemoryState(state.ratio, 3, 128, round(0.97 * TOTAL), TOTAL, "fake")


# --- the batch cap -----------------------------------------------------------------------


def test_batch_shrinks_by_halves_every_interval_down_to_the_floor() -> None:
    world = World(max_batch=256)
    state = world.feed([0.96] * 30)  # 30 s at the top level, one check a second
    assert world.actions.batches == [128, 64, 32, 16]  # at 0, 5, 10, 15 s; then the floor
    assert world.kinds().count(SHRUNK) == 4
    assert "(the floor)" in world.reports[-1][2]
    assert (state.level, state.max_batch) == (3, 16)


def test_batch_recovers_stepwise_only_past_the_margin_and_never_above_the_original() -> None:
    world = World(max_batch=100)
    world.feed([0.96] * 16)
    assert world.actions.batches == [50, 25, 16]
    world.feed([0.91] * 30)  # under the top level but not past the margin: still raised
    assert world.actions.batches == [50, 25, 16]
    world.actions.batches.clear()
    state = world.feed([0.60] * 60)  # cleared at t0; doubling every 10 s after a 10 s pause
    assert world.actions.batches == [32, 64, 100]
    assert world.kinds().count(RESTORED) == 3 and state.max_batch == 100
    assert "64 -> 100 of 100 rows" in world.reports[-1][2]


def test_restoring_waits_a_full_interval_after_the_clear() -> None:
    world = World(max_batch=64)
    world.feed([0.96])
    world.feed([0.50] * 10)  # cleared at the first; 9 s later still waiting
    assert world.actions.batches == [32]
    world.feed([0.50])
    assert world.actions.batches == [32, 64]


def test_a_new_crossing_while_restoring_shrinks_at_once() -> None:
    world = World(max_batch=64)
    world.feed([0.96] * 6)  # 32 at once, 16 after 5 s
    world.feed([0.50] * 11)  # back to 32
    world.feed([0.97])
    assert world.actions.batches == [32, 16, 32, 16]


def test_a_floor_above_the_original_cap_never_grows_it() -> None:
    world = World(max_batch=8)
    state = world.feed([0.99] * 20)
    assert world.actions.batches == [] and state.max_batch == 8


# --- readings that fail ------------------------------------------------------------------


@pytest.mark.parametrize("failure", [None, RuntimeError("NVML gone"),
                                     MemoryUsage(1, 0, "broken")])
def test_no_reading_leaves_everything_unchanged_and_reports_once(failure: Reading) -> None:
    world = World(max_batch=64)
    world.feed([0.96])
    before = world.manager.state
    world.reports.clear()
    for _ in range(20):
        world.readings.next = failure
        assert world.manager.check() == before
        world.clock.now += 1.0
    assert world.kinds() == [UNREADABLE]
    assert world.actions.batches == [32]  # no shrink while blind, no restore either
    assert "unchanged" in world.reports[0][2]


def test_readable_again_is_reported_once_and_the_levels_resume() -> None:
    world = World(max_batch=64)
    world.feed([0.96, None, None, RuntimeError("x"), 0.96])
    assert world.kinds() == [HIGH, FREED, SHRUNK, UNREADABLE, READABLE]
    world.feed([0.96] * 3)
    assert world.actions.batches == [32, 16]


def test_failing_actions_are_reported_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    world = World()

    def broken(rows: int) -> None:
        raise RuntimeError("engine gone")

    world.actions.set_max_batch = broken  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, "unistack.ml"):
        world.feed([0.97])
    assert "the action failed: RuntimeError: engine gone" in world.reports[-1][2]


def test_config_rejects_levels_that_do_not_rise() -> None:
    with pytest.raises(ValueError, match="rise"):
        PressureConfig(levels=(0.9, 0.8, 0.95))


# --- readers -----------------------------------------------------------------------------


def importer_of(**modules: Any) -> Callable[[str], Any]:
    def load(name: str) -> Any:
        if name not in modules:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return modules[name]

    return load


def fake_pynvml(calls: list[str], init: Callable[[], None] | None = None,
                memory: Callable[[Any], Any] | None = None) -> SimpleNamespace:
    def handle(index: int) -> int:
        calls.append(f"handle {index}")
        return index

    def info(handle: int) -> SimpleNamespace:
        calls.append(f"info {handle}")
        return SimpleNamespace(total=96 * GIB, free=90 * GIB, used=6 * GIB)

    return SimpleNamespace(nvmlInit=init or (lambda: calls.append("init")),
                           nvmlDeviceGetHandleByIndex=handle,
                           nvmlDeviceGetMemoryInfo=memory or info)


def test_nvml_reader_reads_the_device_and_inits_once() -> None:
    calls: list[str] = []
    read = nvml_reader(importer_of(pynvml=fake_pynvml(calls)), device=1)
    assert read() == MemoryUsage(6 * GIB, 96 * GIB, "nvml")
    assert read() == MemoryUsage(6 * GIB, 96 * GIB, "nvml")
    assert calls == ["init", "handle 1", "info 1", "info 1"]


def test_nvml_reader_without_pynvml_or_driver_is_none_with_one_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []

    def no_driver() -> None:
        calls.append("init")
        raise type("NVMLError_LibraryNotFound", (Exception,), {})("NVML Shared Library Not Found")

    with caplog.at_level(logging.WARNING, "unistack.ml"):
        missing = nvml_reader(importer_of())
        broken = nvml_reader(importer_of(pynvml=fake_pynvml(calls, init=no_driver)))
        assert [missing(), missing(), broken(), broken()] == [None] * 4
    assert calls == ["init"]  # a failed init is not retried
    assert len(caplog.records) == 2
    assert "NVMLError_LibraryNotFound: NVML Shared Library Not Found" in caplog.text


def test_nvml_reader_read_errors_log_once_per_streak(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []
    fails = [True, True, False, True]
    info = SimpleNamespace(total=10, used=5)

    def memory(handle: Any) -> Any:
        if fails.pop(0):
            raise RuntimeError("GPU is lost")
        return info

    read = nvml_reader(importer_of(pynvml=fake_pynvml(calls, memory=memory)))
    with caplog.at_level(logging.WARNING, "unistack.ml"):
        assert [read(), read(), read(), read()] == [None, None, MemoryUsage(5, 10, "nvml"), None]
    assert len(caplog.records) == 2 and calls == ["init", "handle 0"]


def fake_cupy(used: int, limit: int, device_total: int = 80 * GIB) -> SimpleNamespace:
    pool = SimpleNamespace(used_bytes=lambda: used, get_limit=lambda: limit,
                           total_bytes=lambda: used + GIB)
    runtime = SimpleNamespace(memGetInfo=lambda: (device_total - used, device_total))
    return SimpleNamespace(get_default_memory_pool=lambda: pool,
                           cuda=SimpleNamespace(runtime=runtime))


def test_cupy_pool_reader_uses_the_pool_limit_or_the_device_total() -> None:
    limited = cupy_pool_reader(importer_of(cupy=fake_cupy(3 * GIB, limit=4 * GIB)))
    assert limited() == MemoryUsage(3 * GIB, 4 * GIB, "cupy_pool")
    unlimited = cupy_pool_reader(importer_of(cupy=fake_cupy(3 * GIB, limit=0)))
    assert unlimited() == MemoryUsage(3 * GIB, 80 * GIB, "cupy_pool")
    assert cupy_pool_reader(importer_of())() is None


def test_first_reading_falls_back_to_the_next_source() -> None:
    nvml = nvml_reader(importer_of())
    pool = cupy_pool_reader(importer_of(cupy=fake_cupy(GIB, limit=2 * GIB)))
    assert first_reading(nvml, pool)() == MemoryUsage(GIB, 2 * GIB, "cupy_pool")
    assert first_reading(nvml)() is None


# --- DefaultActions ------------------------------------------------------------------------


def recording_cupy(calls: list[str]) -> SimpleNamespace:
    held = [5 * GIB]

    def free_all_blocks() -> None:
        calls.append("pool.free_all_blocks")
        held[0] = 2 * GIB

    pool = SimpleNamespace(total_bytes=lambda: held[0], free_all_blocks=free_all_blocks)
    pinned = SimpleNamespace(free_all_blocks=lambda: calls.append("pinned.free_all_blocks"))
    return SimpleNamespace(get_default_memory_pool=lambda: pool,
                           get_default_pinned_memory_pool=lambda: pinned)


def recording_tf(calls: list[str]) -> SimpleNamespace:
    backend = SimpleNamespace(clear_session=lambda: calls.append("clear_session"))
    return SimpleNamespace(keras=SimpleNamespace(backend=backend))


def collector(calls: list[str]) -> Callable[[], int]:
    def collect() -> int:
        calls.append("gc")
        return 42

    return collect


def test_default_actions_free_keras_then_gc_then_the_cupy_pools() -> None:
    calls: list[str] = []
    actions = DefaultActions(lambda rows: None, importer_of(
        cupy=recording_cupy(calls), tensorflow=recording_tf(calls)), collector(calls))
    detail = actions.free_caches()
    assert calls == ["clear_session", "gc", "pool.free_all_blocks", "pinned.free_all_blocks"]
    assert detail == ("tensorflow: keras session cleared; gc: 42 objects collected; "
                      "cupy: pool 5120 -> 2048 MiB held, pinned pool freed")


def test_default_actions_skip_what_is_not_loaded_and_report_what_breaks() -> None:
    calls: list[str] = []
    assert DefaultActions(lambda rows: None, importer_of(), collector(calls)).free_caches() == (
        "gc: 42 objects collected")
    broken = SimpleNamespace(get_default_memory_pool=lambda: 1 / 0)
    detail = DefaultActions(lambda rows: None, importer_of(cupy=broken),
                            collector(calls)).free_caches()
    assert detail == "gc: 42 objects collected; cupy: failed: ZeroDivisionError: division by zero"


def test_default_actions_pass_the_batch_cap_to_the_engine() -> None:
    caps: list[int] = []
    DefaultActions(caps.append, importer_of()).set_max_batch(64)
    assert caps == [64]


def test_imported_only_never_imports() -> None:
    assert imported_only("logging") is logging
    with pytest.raises(ModuleNotFoundError):
        imported_only("unistack_no_such_module")
