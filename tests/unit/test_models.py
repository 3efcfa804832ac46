"""ModelStore: new versions are swapped in warmed up; a broken one leaves the old serving."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from unistack.ml.capability import Choice
from unistack.ml.market import synthetic_bars
from unistack.ml.models import ModelStore, on_cpu
from unistack.ml.registry import ModelRegistry
from unistack.ml.training import train_and_register


def test_refresh_swaps_to_the_newest_version_and_survives_a_broken_one(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    train_and_register(registry, "alpha", synthetic_bars(800), "s", rounds=5)
    reports: list[tuple[str, str]] = []
    store = ModelStore(registry, on_cpu, report=lambda kind, detail: reports.append((kind, detail)))
    store.refresh()
    first = store.get("alpha")
    assert first is not None and first.version.version == 1
    train_and_register(registry, "alpha", synthetic_bars(800, seed=2), "s", rounds=7)
    store.refresh()
    second = store.get("alpha")
    assert second is not None and second.version.version == 2
    assert second.backend.predict(np.zeros((2, 8), np.float32)).shape == (2,)
    assert store.get("alpha", 1) is None  # only the serving version answers a pin
    broken = train_and_register(registry, "alpha", synthetic_bars(800), "s", rounds=5)
    broken.model_file.write_bytes(b"not a model")
    store.refresh()
    serving = store.get("alpha")
    assert serving is not None and serving.version.version == 2
    assert reports[-1][0] == "model_load_failed" and "still serving v2" in reports[-1][1]
    store.refresh()  # a failed version is not retried on every refresh
    assert [kind for kind, _ in reports].count("model_load_failed") == 1
    assert store.describe()["alpha"]["version"] == 2
    assert store.describe()["alpha"]["library_version"]


def test_a_corrupt_newest_version_on_a_fresh_start_serves_the_newest_good_one(
    tmp_path: Path,
) -> None:
    registry = ModelRegistry(tmp_path / "models")
    train_and_register(registry, "alpha", synthetic_bars(800), "s", rounds=5)
    newest = train_and_register(registry, "alpha", synthetic_bars(800, seed=2), "s", rounds=5)
    newest.model_file.write_bytes(newest.model_file.read_bytes() + b"!")  # checksum only
    store = ModelStore(registry, on_cpu)
    store.refresh()
    serving = store.get("alpha")
    assert serving is not None and serving.version.version == 1
    assert store.unservable == {}


def test_with_every_version_corrupt_the_model_is_unservable_with_the_fix(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    only = train_and_register(registry, "alpha", synthetic_bars(800), "s", rounds=5)
    only.model_file.write_bytes(only.model_file.read_bytes() + b"!")
    store = ModelStore(registry, on_cpu)
    store.refresh()
    assert store.get("alpha") is None
    why = store.unservable["alpha"]
    assert why.startswith("model alpha v1 failed its checksum") and "ml train" in why
    repaired = train_and_register(registry, "alpha", synthetic_bars(800), "s", rounds=5)
    store.refresh()
    serving = store.get("alpha")
    assert serving is not None and serving.version.version == repaired.version
    assert store.unservable == {}


def test_a_corrupt_version_restored_from_a_backup_is_served_again(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    only = train_and_register(registry, "alpha", synthetic_bars(800), "s", rounds=5)
    good = only.model_file.read_bytes()
    only.model_file.write_bytes(good + b"!")
    reports: list[str] = []
    store = ModelStore(registry, on_cpu, report=lambda kind, detail: reports.append(kind))
    store.refresh()
    store.refresh()  # unchanged: not tried again
    assert store.get("alpha") is None and reports.count("model_load_failed") == 1
    only.model_file.write_bytes(good)  # the operator restores the file
    store.refresh()
    serving = store.get("alpha")
    assert serving is not None and serving.version.version == 1
    assert store.unservable == {}


def test_a_pinned_version_is_served_instead_of_the_newest(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    for _ in range(2):
        train_and_register(registry, "alpha", synthetic_bars(800), "s", rounds=5)
    store = ModelStore(registry, on_cpu, pinned={"alpha": 1})
    store.refresh()
    loaded = store.get("alpha")
    assert loaded is not None and loaded.version.version == 1


def test_a_model_kind_that_cannot_run_here_is_refused_with_the_reason(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    train_and_register(registry, "alpha", synthetic_bars(800), "s", rounds=5)
    reports: list[tuple[str, str]] = []
    gpu_only = {"xgboost": Choice(None, "ML_REQUIRE_GPU=1 and no usable CUDA device")}
    store = ModelStore(registry, lambda kind: gpu_only[kind],
                       report=lambda kind, detail: reports.append((kind, detail)))
    store.refresh()
    assert store.names() == []
    assert reports == [("model_load_failed", "alpha v1: model kind 'xgboost' cannot run here: "
                        "ML_REQUIRE_GPU=1 and no usable CUDA device")]
