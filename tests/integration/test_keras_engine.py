"""A Keras model registered like any other (a .keras file, backend "keras") is loaded,
warmed up and served by the ModelStore on CPU, predicting what Keras itself predicts."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from unistack.ml.models import ModelStore, on_cpu
from unistack.ml.registry import ModelRegistry

FEATURES = [f"f{i}" for i in range(8)]
pytestmark = pytest.mark.filterwarnings(  # Keras 3 saving under NumPy 2; nothing of ours
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")


def keras_model(tf: Any) -> Any:
    """Dense 8 -> 16 -> 1 sigmoid with fixed initial weights."""
    tf.keras.utils.set_random_seed(11)
    return tf.keras.Sequential([tf.keras.Input((len(FEATURES),)),
                                tf.keras.layers.Dense(16, activation="relu"),
                                tf.keras.layers.Dense(1, activation="sigmoid")])


def test_the_store_serves_a_registered_keras_model(tmp_path: Path) -> None:
    tf = importlib.import_module("tensorflow")  # installed by the test command: never skip
    model = keras_model(tf)
    model.save(tmp_path / "model.keras")
    registry = ModelRegistry(tmp_path / "models")
    registry.register("signals", tmp_path / "model.keras",
                      {"feature_names": FEATURES, "backend": "keras"})
    reports: list[tuple[str, str]] = []
    store = ModelStore(registry, on_cpu, report=lambda kind, detail: reports.append((kind, detail)))

    store.refresh()

    loaded = store.get("signals")
    assert reports == [("model_loaded", "signals v1 serving (was nothing)")]
    assert loaded is not None and loaded.n_features == len(FEATURES)
    x = np.random.default_rng(11).normal(size=(50, len(FEATURES))).astype(np.float32)
    np.testing.assert_allclose(loaded.backend.predict(x), model.predict(x, verbose=0)[:, 0],
                               rtol=1e-6, atol=1e-7)
    assert store.describe()["signals"] == {
        "kind": "keras", "device": "cpu", "library_version": tf.__version__,
        "n_features": len(FEATURES), "mixed_precision": False, "version": 1}
