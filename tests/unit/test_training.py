"""Training registers a model whose predictions are reproducible from its file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

from unistack.ml.features import FEATURE_NAMES, features_and_labels
from unistack.ml.market import synthetic_bars
from unistack.ml.registry import ModelRegistry
from unistack.ml.training import train, train_and_register


def test_train_and_register_writes_a_loadable_checked_version(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    bars = synthetic_bars(3000, seed=3)
    version = train_and_register(registry, "alpha", bars, "synthetic", rounds=20)
    assert version.version == 1
    assert version.feature_names == list(FEATURE_NAMES)
    assert version.metadata["training"]["bars"] == 3000
    metrics = version.metadata["metrics"]
    assert 0.0 <= metrics["holdout_auc"] <= 1.0
    assert metrics["train_rows"] + metrics["holdout_rows"] == len(features_and_labels(bars)[1])
    registry.verify(version)
    booster = xgb.Booster(model_file=str(version.model_file))
    x, _ = features_and_labels(bars)
    again = train(bars, rounds=20).booster
    np.testing.assert_array_equal(booster.inplace_predict(x), again.inplace_predict(x))


def test_too_few_bars_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="too few rows"):
        train(synthetic_bars(60), rounds=5)
