"""Backends: a real XGBoost model on CPU, clear errors, and the CUDA batch routing with a
fake CuPy; Keras and TensorRT explain what is missing instead of failing at import."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import pytest
import xgboost

from unistack.ml.backends import (
    BackendError,
    BackendUnavailable,
    KerasBackend,
    TensorRTBackend,
    XGBoostBackend,
    make_backend,
)

N_FEATURES = 6


class Trained(NamedTuple):
    booster: xgboost.Booster
    path: Path
    x: npt.NDArray[np.float32]


@pytest.fixture
def trained(tmp_path: Path) -> Trained:
    rng = np.random.default_rng(7)
    x = rng.random((300, N_FEATURES), dtype=np.float32)
    y = x @ rng.random(N_FEATURES) + rng.normal(0, 0.1, 300)
    booster = xgboost.train({"max_depth": 4, "nthread": 1}, xgboost.DMatrix(x, label=y), 20)
    path = tmp_path / "model.ubj"
    booster.save_model(path)
    return Trained(booster, path, x)


def loaded(path: Path, **options: Any) -> XGBoostBackend:
    backend = XGBoostBackend("cpu", **options)
    backend.load(path)
    return backend


def importer_without(*missing: str) -> Callable[[str], Any]:
    def load(name: str) -> Any:
        if name in missing:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return SimpleNamespace(__version__="10.3.0")

    return load


def test_cpu_predictions_equal_the_booster_exactly(trained: Trained) -> None:
    backend = loaded(trained.path, nthread=1)

    for rows in (trained.x[:1], trained.x[:17], trained.x):
        np.testing.assert_array_equal(backend.predict(rows),
                                      trained.booster.inplace_predict(rows))


def test_warm_up_runs_a_batch_of_the_model_width(trained: Trained) -> None:
    backend = loaded(trained.path)

    backend.warm_up(N_FEATURES)

    with pytest.raises(BackendError, match="expected 6, got 5"):
        backend.warm_up(5)


def test_feature_count_mismatch_names_expected_and_actual(trained: Trained) -> None:
    with pytest.raises(BackendError, match="expected 6, got 4"):
        loaded(trained.path).predict(trained.x[:, :4])
    with pytest.raises(BackendError, match="expected 8, the model was trained on 6"):
        loaded(trained.path, n_features=8)
    with pytest.raises(BackendError, match=r"2-D batch .* got shape \(6,\)"):
        loaded(trained.path).predict(trained.x[0])


def test_missing_unreadable_or_unloaded_models_raise(trained: Trained, tmp_path: Path) -> None:
    with pytest.raises(BackendError, match=r"nothing\.ubj does not exist"):
        loaded(tmp_path / "nothing.ubj")
    (tmp_path / "model.pkl").write_bytes(b"pickle")
    with pytest.raises(BackendError, match=r"expected an XGBoost model saved as \.ubj or \.json"):
        loaded(tmp_path / "model.pkl")
    (tmp_path / "garbage.json").write_text("{not json")
    with pytest.raises(BackendError, match="not a loadable XGBoost model"):
        loaded(tmp_path / "garbage.json")
    with pytest.raises(BackendError, match=r"no model loaded: call load\(path\) first"):
        XGBoostBackend().predict(trained.x)


def test_describe_names_kind_device_version_and_width(trained: Trained) -> None:
    assert loaded(trained.path).describe() == {
        "kind": "xgboost", "device": "cpu", "version": xgboost.__version__,
        "n_features": N_FEATURES, "gpu_min_rows": 256,
    }


def test_cuda_on_a_cpu_only_xgboost_build_is_unavailable(trained: Trained) -> None:
    backend = XGBoostBackend("cuda")
    backend._build_info = lambda: {"USE_CUDA": False}

    with pytest.raises(BackendUnavailable, match="CPU-only build"):
        backend.load(trained.path)


class FakeCupy:
    """Records what crosses to the "device"; arrays stay NumPy (a marked subclass)."""

    class OnDevice(np.ndarray):
        pass

    def __init__(self) -> None:
        self.uploaded: list[int] = []
        self.downloaded = 0

    def asarray(self, x: npt.NDArray[Any]) -> npt.NDArray[Any]:
        self.uploaded.append(len(x))
        return x.view(self.OnDevice)

    def asnumpy(self, x: npt.NDArray[Any]) -> npt.NDArray[Any]:
        self.downloaded += 1
        return np.asarray(x)


# xgboost-cpu warns that a "cuda" booster runs on CPU: no GPU here.
@pytest.mark.filterwarnings("ignore:.*Device is changed from GPU to CPU:UserWarning")
def test_cuda_routes_batches_of_gpu_min_rows_and_more_to_the_device(trained: Trained) -> None:
    cupy = FakeCupy()
    backend = XGBoostBackend("cuda", gpu_min_rows=64, cupy=cupy)
    backend._build_info = lambda: {"USE_CUDA": True}  # pretend the CUDA wheel
    backend.load(trained.path)

    small = backend.predict(trained.x[:63])
    assert cupy.uploaded == []
    big = backend.predict(trained.x[:64])
    assert (cupy.uploaded, cupy.downloaded) == ([64], 1)

    np.testing.assert_array_equal(small, trained.booster.inplace_predict(trained.x[:63]))
    np.testing.assert_array_equal(big, trained.booster.inplace_predict(trained.x[:64]))
    backend.warm_up(N_FEATURES)  # warms both paths: one more upload of 64 rows
    assert cupy.uploaded == [64, 64]
    assert backend.describe()["device"] == "cuda"


def test_keras_without_tensorflow_is_unavailable_with_the_fix(tmp_path: Path) -> None:
    backend = KerasBackend("cpu", importer=importer_without("tensorflow"))

    with pytest.raises(BackendUnavailable) as raised:
        backend.load(tmp_path / "model.keras")

    assert str(raised.value) == ("the Keras backend needs tensorflow: "
                                 "not installed (pip install unistack[tf])")


def test_tensorrt_without_tensorrt_or_cupy_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailable, match=r"needs tensorrt: not installed \(pip install"):
        TensorRTBackend(importer=importer_without("tensorrt", "cupy")).load(tmp_path / "m.plan")
    with pytest.raises(BackendUnavailable, match="the TensorRT backend needs cupy: not installed"):
        TensorRTBackend(importer=importer_without("cupy")).load(tmp_path / "m.plan")


def test_backends_refuse_devices_they_cannot_use() -> None:
    with pytest.raises(BackendError, match="TensorRT runs on 'cuda' only"):
        TensorRTBackend("cpu")
    with pytest.raises(BackendError, match="expected 'cpu' or 'gpu'"):
        KerasBackend("cuda")
    with pytest.raises(BackendError, match="expected 'cpu' or 'cuda'"):
        XGBoostBackend("gpu")


def test_make_backend_builds_by_kind(trained: Trained) -> None:
    backend = make_backend("xgboost", "cpu", nthread=1)
    backend.load(trained.path)

    assert backend.describe()["n_features"] == N_FEATURES
    assert isinstance(make_backend("keras", "gpu"), KerasBackend)
    with pytest.raises(BackendError, match="unknown backend kind 'torch'"):
        make_backend("torch", "cpu")
