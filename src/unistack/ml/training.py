"""Training: an XGBoost model of "does the next bar close higher" from OHLCV bars,
evaluated on the most recent fifth of the data (never shuffled: that would leak the
future into training), and registered as a new version."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import xgboost as xgb
from numpy.typing import NDArray

from unistack.ml.features import FEATURE_NAMES, features_and_labels
from unistack.ml.market import Bars
from unistack.ml.registry import ModelRegistry, ModelVersion

_HOLDOUT = 0.2


class TrainingResult(NamedTuple):
    booster: xgb.Booster
    metrics: dict[str, float]
    params: dict[str, Any]


def _accuracy(labels: NDArray[Any], probabilities: NDArray[Any]) -> float:
    return float(np.mean((probabilities >= 0.5) == (labels == 1)))


def train(bars: Bars, rounds: int = 200, seed: int = 0, nthread: int = 2) -> TrainingResult:
    """Fit on the older 80 % of the bars, measure on the newest 20 %."""
    x, y = features_and_labels(bars)
    split = int(len(y) * (1 - _HOLDOUT))
    if split < 10 or len(y) - split < 10:
        raise ValueError(f"{len(bars.close)} bars give too few rows to train and evaluate; "
                         "expected at least 100 bars")
    params: dict[str, Any] = {"objective": "binary:logistic", "eval_metric": ["logloss", "auc"],
                              "tree_method": "hist", "max_depth": 6, "eta": 0.05,
                              "subsample": 0.8, "seed": seed, "nthread": nthread}
    train_set = xgb.DMatrix(x[:split], label=y[:split], feature_names=list(FEATURE_NAMES))
    test_set = xgb.DMatrix(x[split:], label=y[split:], feature_names=list(FEATURE_NAMES))
    evals: dict[str, Any] = {}
    booster = xgb.train(params, train_set, num_boost_round=rounds,
                        evals=[(test_set, "holdout")], evals_result=evals, verbose_eval=False)
    holdout = booster.inplace_predict(x[split:])
    metrics = {"holdout_logloss": float(evals["holdout"]["logloss"][-1]),
               "holdout_auc": float(evals["holdout"]["auc"][-1]),
               "holdout_accuracy": _accuracy(y[split:], holdout),
               "train_rows": float(split), "holdout_rows": float(len(y) - split)}
    return TrainingResult(booster, metrics, params)


def train_and_register(
    registry: ModelRegistry, name: str, bars: Bars, source: str, *, rounds: int = 200,
    seed: int = 0,
) -> ModelVersion:
    """Train on BARS and register the model as the next version of NAME."""
    result = train(bars, rounds=rounds, seed=seed)
    with tempfile.TemporaryDirectory() as scratch:
        model_file = Path(scratch) / "model.ubj"
        result.booster.save_model(model_file)
        return registry.register(name, model_file, {
            "backend": "xgboost",
            "feature_names": list(FEATURE_NAMES),
            "n_features": len(FEATURE_NAMES),
            "outputs": 1,
            "created": time.time(),
            "metrics": result.metrics,
            "training": {"source": source, "bars": len(bars.close), "rounds": rounds,
                         "params": result.params},
        })
