"""The Keras backend with real TensorFlow on CPU: a small model saved as a .keras file and
exported as a SavedModel predicts what Keras itself predicts; unusable models, wrong
widths and unloaded backends raise a BackendError that names the problem.

TensorFlow is installed by the test command (the `tf` extra), so a missing one fails here.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import pytest

from unistack.ml.backends import BackendError, KerasBackend

N_FEATURES = 8
# Keras 3 saving a model under NumPy 2 warns about its own __array__; nothing of ours.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")


class Saved(NamedTuple):
    model: Any  # the keras.Model that was saved
    keras_file: Path
    saved_model: Path
    x: npt.NDArray[np.float32]


@pytest.fixture(scope="module")
def tf() -> Any:
    """TensorFlow, imported only by the tests that use it (the import takes ~2.5 s)."""
    return importlib.import_module("tensorflow")


def small_model(tf: Any, outputs: int = 1, activation: str = "sigmoid") -> Any:
    """Dense 8 -> 16 -> OUTPUTS with fixed initial weights."""
    tf.keras.utils.set_random_seed(7)
    return tf.keras.Sequential([
        tf.keras.Input((N_FEATURES,)),
        tf.keras.layers.Dense(16, activation="relu"),
        tf.keras.layers.Dense(outputs, activation=activation),
    ])


@pytest.fixture(scope="module")
def saved(tf: Any, tmp_path_factory: pytest.TempPathFactory) -> Saved:
    directory = tmp_path_factory.mktemp("keras")
    model = small_model(tf)
    model.save(directory / "model.keras")
    model.export(str(directory / "saved_model"), verbose=False)
    x = np.random.default_rng(7).normal(size=(64, N_FEATURES)).astype(np.float32)
    return Saved(model, directory / "model.keras", directory / "saved_model", x)


def loaded(path: Path) -> KerasBackend:
    backend = KerasBackend("cpu")
    backend.load(path)
    backend.warm_up(N_FEATURES)
    return backend


def assert_predicts_like_keras(backend: KerasBackend, model: Any,
                               x: npt.NDArray[np.float32]) -> None:
    for rows in (x[:1], x[:17], x):
        out = backend.predict(rows)
        assert out.dtype == np.float32
        assert out.shape == (len(rows),)
        np.testing.assert_allclose(out, model.predict(rows, verbose=0)[:, 0],
                                   rtol=1e-6, atol=1e-7)


def test_a_keras_file_predicts_what_keras_predicts(saved: Saved) -> None:
    assert_predicts_like_keras(loaded(saved.keras_file), saved.model, saved.x)


def test_a_saved_model_directory_predicts_what_keras_predicts(saved: Saved) -> None:
    assert_predicts_like_keras(loaded(saved.saved_model), saved.model, saved.x)


def test_k_outputs_give_k_columns(tf: Any, saved: Saved, tmp_path: Path) -> None:
    model = small_model(tf, outputs=3, activation="softmax")
    model.save(tmp_path / "classes.keras")

    out = loaded(tmp_path / "classes.keras").predict(saved.x)

    assert out.shape == (len(saved.x), 3)
    np.testing.assert_allclose(out, model.predict(saved.x, verbose=0), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("model", ["keras_file", "saved_model"])
def test_a_wrong_feature_count_names_expected_and_actual(saved: Saved, model: str) -> None:
    backend = loaded(getattr(saved, model))

    with pytest.raises(BackendError, match="feature count mismatch: expected 8, got 5"):
        backend.predict(saved.x[:, :5])
    with pytest.raises(BackendError, match="expected 8, got 9"):
        backend.warm_up(9)
    with pytest.raises(BackendError, match=r"expected a 2-D batch .* got shape \(8,\)"):
        backend.predict(saved.x[0])


def test_describe_reports_kind_device_tensorflow_version_and_width(
        tf: Any, saved: Saved) -> None:
    unloaded = KerasBackend("cpu").describe()
    described = loaded(saved.keras_file).describe()

    assert unloaded["version"] is None
    assert described == {"kind": "keras", "device": "cpu", "version": tf.__version__,
                         "n_features": N_FEATURES, "mixed_precision": False}


def test_predict_before_load_says_so(saved: Saved) -> None:
    with pytest.raises(BackendError, match=r"no model loaded: call load\(path\) first"):
        KerasBackend("cpu").predict(saved.x)


def test_a_file_keras_cannot_read_is_refused_naming_it(tmp_path: Path) -> None:
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a zip archive")

    with pytest.raises(BackendError, match=re.escape(f"{broken}: not a loadable Keras model")):
        KerasBackend("cpu").load(broken)
    with pytest.raises(BackendError, match="does not exist"):
        KerasBackend("cpu").load(tmp_path / "missing.keras")


def save_module(tf: Any, path: Path, n_inputs: int, signed: bool) -> None:
    """A bare tf.Module summing N_INPUTS [n, 3] tensors, saved with or without serving_default."""
    module = tf.Module()
    module.f = tf.function(lambda *xs: sum(xs),
                           input_signature=[tf.TensorSpec([None, 3], tf.float32)] * n_inputs)
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.f} if signed
                        else {})


def test_a_saved_model_without_a_serving_signature_is_refused(tf: Any, tmp_path: Path) -> None:
    save_module(tf, tmp_path / "unsigned", n_inputs=1, signed=False)

    with pytest.raises(BackendError, match="needs a 'serving_default' signature"):
        KerasBackend("cpu").load(tmp_path / "unsigned")


def test_a_saved_model_with_two_inputs_is_refused(tf: Any, tmp_path: Path) -> None:
    save_module(tf, tmp_path / "two", n_inputs=2, signed=True)

    with pytest.raises(BackendError, match=r"1 input and 1 output, got inputs \[.*, .*\]"):
        KerasBackend("cpu").load(tmp_path / "two")
