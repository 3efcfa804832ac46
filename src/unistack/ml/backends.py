"""Backends: one small protocol (`load`, `warm_up`, `predict`, `describe`) per model runtime.

XGBoost is first-class on CPU and routes big batches to CUDA; Keras and TensorRT import
their libraries only inside `load`, so this module works on a machine without them and
says clearly what is missing (`BackendUnavailable`) instead of failing at import time.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import xgboost
from xgboost.core import XGBoostError

from unistack.ml.capability import import_failure

Importer = Callable[[str], Any]
Array = npt.NDArray[Any]

# Below this many rows a CUDA XGBoost model still predicts on CPU: the Python binding
# costs ~280 µs per call whatever the device, so for small batches the host-device copy
# and launch only add latency. Tune on the target; NVLink-C2C on GH200 lowers it.
DEFAULT_GPU_MIN_ROWS = 256
_XGBOOST_SUFFIXES = (".ubj", ".json")


class BackendError(Exception):
    """A model cannot be loaded or served; the message names the file, value or shape."""


class BackendUnavailable(BackendError):
    """The library or device a backend needs is missing; the message says which and how."""


class Backend(Protocol):
    def load(self, path: Path | str) -> None: ...

    def warm_up(self, n_features: int) -> None: ...

    def predict(self, x: npt.NDArray[np.float32]) -> Array: ...

    def describe(self) -> dict[str, Any]: ...


def _existing(path: Path | str) -> Path:
    found = Path(path)
    if not found.exists():
        raise BackendError(f"model file {found} does not exist")
    return found


def _check_columns(x: Array, expected: int | None) -> None:
    if x.ndim != 2:
        raise BackendError(f"expected a 2-D batch [rows, features], got shape {x.shape}")
    if expected is not None and x.shape[1] != expected:
        raise BackendError(f"feature count mismatch: expected {expected}, got {x.shape[1]}")


def _require(importer: Importer, module: str, purpose: str) -> Any:
    try:
        return importer(module)
    except Exception as exc:  # a broken install can raise anything while importing
        raise BackendUnavailable(f"{purpose} needs {module}: {import_failure(module, exc)}"
                                 ) from exc


def _warm_batch(n_features: int, rows: int = 1) -> npt.NDArray[np.float32]:
    return np.zeros((rows, n_features), dtype=np.float32)


class XGBoostBackend:
    """An XGBoost Booster from a .ubj/.json file; on "cuda", batches of at least
    `gpu_min_rows` go to the GPU as CuPy arrays and smaller ones stay on a CPU copy."""

    def __init__(self, device: str = "cpu", nthread: int | None = None,
                 n_features: int | None = None, gpu_min_rows: int = DEFAULT_GPU_MIN_ROWS,
                 cupy: Any = None) -> None:
        if device not in ("cpu", "cuda"):
            raise BackendError(f"XGBoost device {device!r}: expected 'cpu' or 'cuda'")
        self._device = device
        self._nthread = nthread
        self._n_features = n_features  # expected, e.g. from the registry's metadata
        self._gpu_min_rows = gpu_min_rows
        self._cupy = cupy
        self._build_info: Callable[[], dict[str, Any]] = xgboost.build_info
        self._importer: Importer = importlib.import_module
        self._cpu: xgboost.Booster | None = None
        self._gpu: xgboost.Booster | None = None

    def load(self, path: Path | str) -> None:
        booster = self._read(_existing(path))
        self._check_model_features(booster.num_features())
        if self._device == "cuda":
            self._cupy = self._cuda_modules()
            self._gpu = booster.copy()
            self._gpu.set_param({"device": "cuda"})
        booster.set_param({"device": "cpu"})
        if self._nthread is not None:
            booster.set_param({"nthread": self._nthread})
        self._cpu = booster

    def _read(self, path: Path) -> xgboost.Booster:
        if path.suffix not in _XGBOOST_SUFFIXES:
            raise BackendError(f"{path}: expected an XGBoost model saved as .ubj or .json")
        try:
            return xgboost.Booster(model_file=str(path))
        except XGBoostError as exc:
            first_line = str(exc).splitlines()[0] if str(exc) else "unreadable"
            raise BackendError(f"{path}: not a loadable XGBoost model: {first_line}") from exc

    def _check_model_features(self, actual: int) -> None:
        if self._n_features is not None and actual != self._n_features:
            raise BackendError(f"feature count mismatch: expected {self._n_features}, "
                               f"the model was trained on {actual}")
        self._n_features = actual

    def _cuda_modules(self) -> Any:
        """CuPy, after checking that this xgboost can take CuPy input at all."""
        if not self._build_info().get("USE_CUDA", False):
            raise BackendUnavailable("device 'cuda' needs the CUDA build of xgboost; this is "
                                     "a CPU-only build (xgboost-cpu): use device 'cpu'")
        if self._cupy is not None:
            return self._cupy
        return _require(self._importer, "cupy", "XGBoost on cuda")

    def warm_up(self, n_features: int) -> None:
        self.predict(_warm_batch(n_features))
        if self._gpu is not None:
            self.predict(_warm_batch(n_features, max(self._gpu_min_rows, 1)))

    def predict(self, x: npt.NDArray[np.float32]) -> Array:
        if self._cpu is None:
            raise BackendError("no model loaded: call load(path) first")
        # Columns are checked here once, so XGBoost's per-call validation is skipped.
        _check_columns(x, self._n_features)
        if self._gpu is not None and x.shape[0] >= self._gpu_min_rows:
            return self._predict_on_gpu(self._gpu, x)
        return np.asarray(self._cpu.inplace_predict(x, validate_features=False))

    def _predict_on_gpu(self, booster: xgboost.Booster, x: Array) -> Array:
        # A CUDA booster given NumPy falls back to a DMatrix copy; CuPy input stays on device.
        on_device = self._cupy.asarray(x)
        return np.asarray(self._cupy.asnumpy(booster.inplace_predict(
            on_device, validate_features=False)))

    def describe(self) -> dict[str, Any]:
        return {"kind": "xgboost", "device": self._device, "version": xgboost.__version__,
                "n_features": self._n_features, "gpu_min_rows": self._gpu_min_rows}


def _set_devices(tf: Any, device: str) -> None:
    """Hide the GPUs for "cpu"; otherwise grow GPU memory on demand instead of taking all."""
    gpus = tf.config.list_physical_devices("GPU")
    if device == "cpu":
        tf.config.set_visible_devices([], "GPU")
        return
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)


def _configure_tensorflow(tf: Any, device: str, mixed_precision: bool) -> None:
    # TensorFlow fixes its devices once per process, at first use (an earlier load): it
    # then raises RuntimeError, and the settings made before that still hold.
    with contextlib.suppress(RuntimeError):
        _set_devices(tf, device)
    if mixed_precision:
        tf.keras.mixed_precision.set_global_policy("mixed_float16")


def _input_width(model: Any) -> int | None:
    try:
        width = model.inputs[0].shape[-1]
    except (AttributeError, IndexError, TypeError):  # a subclassed model declares none
        return None
    return None if width is None else int(width)


def _serving_signature(tf: Any, path: Path) -> Any:
    """The SavedModel's serving_default signature, refused unless it is one tensor in, one out."""
    signatures = tf.saved_model.load(str(path)).signatures
    if "serving_default" not in signatures:
        raise BackendError(f"{path}: a SavedModel needs a 'serving_default' signature (has: "
                           f"{', '.join(signatures) or 'none'}); export it with model.export()")
    signature = signatures["serving_default"]
    inputs, outputs = signature.structured_input_signature[1], signature.structured_outputs
    if len(inputs) != 1 or len(outputs) != 1:
        raise BackendError(f"{path}: expected a serving signature with 1 input and 1 output, "
                           f"got inputs {sorted(inputs)} and outputs {sorted(outputs)}")
    return signature


def _saved_model(tf: Any, path: Path) -> tuple[Callable[[Any], Any], int | None]:
    """A SavedModel directory (Keras 3 load_model no longer reads these), by its signature."""
    signature = _serving_signature(tf, path)
    ((name, spec),) = signature.structured_input_signature[1].items()
    ((output, _),) = signature.structured_outputs.items()
    return lambda x: signature(**{name: tf.cast(x, spec.dtype)})[output], spec.shape[-1]


def _keras_model(tf: Any, path: Path) -> tuple[Callable[[Any], Any], int | None]:
    """A callable batch -> tensor, and the model's input width when it declares one."""
    if path.is_dir():
        return _saved_model(tf, path)
    try:
        model = tf.keras.models.load_model(str(path), compile=False)
    except ValueError as exc:  # Keras says "File not found" even for a file it cannot parse
        raise BackendError(f"{path}: not a loadable Keras model (expected a .keras file, a "
                           f"legacy .h5 file or a SavedModel directory): {exc}") from exc
    call = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    return call, _input_width(model)


class KerasBackend:
    """A Keras model (.keras file or SavedModel directory) run through a tf.function."""

    def __init__(self, device: str = "gpu", mixed_precision: bool = False,
                 importer: Importer = importlib.import_module) -> None:
        if device not in ("cpu", "gpu"):
            raise BackendError(f"Keras device {device!r}: expected 'cpu' or 'gpu'")
        self._device = device
        self._mixed_precision = mixed_precision
        self._importer = importer
        self._tf: Any = None
        self._call: Callable[[Any], Any] | None = None
        self._n_features: int | None = None

    def load(self, path: Path | str) -> None:
        tf = _require(self._importer, "tensorflow", "the Keras backend")
        found = _existing(path)
        _configure_tensorflow(tf, self._device, self._mixed_precision)
        self._call, width = _keras_model(tf, found)
        self._n_features = None if width is None else int(width)
        self._tf = tf

    def warm_up(self, n_features: int) -> None:
        self.predict(_warm_batch(n_features))  # traces the tf.function once

    def predict(self, x: npt.NDArray[np.float32]) -> Array:
        if self._call is None:
            raise BackendError("no model loaded: call load(path) first")
        _check_columns(x, self._n_features)
        # float32 out even under mixed precision, like the other backends.
        out = np.asarray(self._call(self._tf.constant(x)).numpy(), dtype=np.float32)
        return out[:, 0] if out.ndim == 2 and out.shape[1] == 1 else out

    def describe(self) -> dict[str, Any]:
        version = str(self._tf.__version__) if self._tf is not None else None
        return {"kind": "keras", "device": self._device, "version": version,
                "n_features": self._n_features, "mixed_precision": self._mixed_precision}


def _allow_fp16(trt: Any, builder: Any, config: Any) -> None:
    # TensorRT 10.5 deprecated platform_has_fast_fp16 and 11 removed the precision flags
    # (networks are strongly typed: FP16 must be in the ONNX); there, build as given.
    flag = getattr(trt.BuilderFlag, "FP16", None)
    if flag is not None and getattr(builder, "platform_has_fast_fp16", False):
        config.set_flag(flag)


def _build_engine(trt: Any, logger: Any, onnx_path: Path, max_batch: int) -> Any:
    """Serialize an engine from ONNX: FP16 where the GPU is fast at it, batch 1..max_batch."""
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"{onnx_path}: TensorRT cannot parse this ONNX model: {errors}")
    config = builder.create_builder_config()
    _allow_fp16(trt, builder, config)
    tensor = network.get_input(0)
    if tensor.shape[0] == -1:  # a dynamic batch needs a profile of allowed shapes
        width = tensor.shape[-1]
        profile = builder.create_optimization_profile()
        # Tuned for the largest batch: small ones are better served by the CPU anyway.
        profile.set_shape(tensor.name, (1, width), (max_batch, width), (max_batch, width))
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(f"{onnx_path}: TensorRT could not build an engine (see its log)")
    return serialized


class _Engine:
    """A deserialized TensorRT engine with one input and one output tensor."""

    def __init__(self, trt: Any, engine: Any) -> None:
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if len(inputs) != 1 or len(outputs) != 1:
            raise BackendError(f"expected an engine with 1 input and 1 output, got inputs "
                               f"{inputs} and outputs {outputs}")
        self.input, self.output = inputs[0], outputs[0]
        self.input_dtype = trt.nptype(engine.get_tensor_dtype(self.input))
        self.output_dtype = trt.nptype(engine.get_tensor_dtype(self.output))
        width = int(engine.get_tensor_shape(self.input)[-1])
        self.n_features = None if width < 0 else width
        self.context = engine.create_execution_context()


class TensorRTBackend:
    """A TensorRT engine (.plan, or built from .onnx) executed with CuPy device buffers."""

    def __init__(self, device: str = "cuda", max_batch: int = 4096,
                 importer: Importer = importlib.import_module) -> None:
        if device != "cuda":
            raise BackendError(f"TensorRT device {device!r}: TensorRT runs on 'cuda' only")
        self._max_batch = max_batch
        self._importer = importer
        self._trt: Any = None
        self._cupy: Any = None
        self._stream: Any = None
        self._keep_alive: tuple[Any, ...] = ()
        self._engine: _Engine | None = None

    def load(self, path: Path | str) -> None:
        trt = _require(self._importer, "tensorrt", "the TensorRT backend")
        cupy = _require(self._importer, "cupy", "the TensorRT backend")
        found = _existing(path)
        logger = trt.Logger(trt.Logger.WARNING)
        plan = (_build_engine(trt, logger, found, self._max_batch) if found.suffix == ".onnx"
                else found.read_bytes())
        runtime = trt.Runtime(logger)
        engine = runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise BackendError(f"{found}: not an engine for this TensorRT version and GPU")
        # The C++ side keeps raw pointers to the logger, runtime and engine: hold them.
        self._keep_alive = (logger, runtime, engine)
        self._engine = _Engine(trt, engine)
        self._trt, self._cupy = trt, cupy
        self._stream = cupy.cuda.Stream(non_blocking=True)

    def warm_up(self, n_features: int) -> None:
        self.predict(_warm_batch(n_features))

    def predict(self, x: npt.NDArray[np.float32]) -> Array:
        engine = self._engine
        if engine is None:
            raise BackendError("no model loaded: call load(path) first")
        _check_columns(x, engine.n_features)
        cupy = self._cupy
        # Every copy and the launch share one stream, so no step can overtake another.
        with self._stream:
            x_device = cupy.ascontiguousarray(cupy.asarray(x, dtype=engine.input_dtype))
            if not engine.context.set_input_shape(engine.input, tuple(x.shape)):
                raise BackendError(f"batch shape {x.shape} is outside the engine's profile "
                                   f"(at most {self._max_batch} rows)")
            shape = tuple(engine.context.get_tensor_shape(engine.output))
            out_device = cupy.empty(shape, dtype=engine.output_dtype)
            engine.context.set_tensor_address(engine.input, x_device.data.ptr)
            engine.context.set_tensor_address(engine.output, out_device.data.ptr)
            if not engine.context.execute_async_v3(self._stream.ptr):
                raise BackendError("TensorRT execution failed (see its log)")
            self._stream.synchronize()
            out = np.asarray(cupy.asnumpy(out_device))
        return out[:, 0] if out.ndim == 2 and out.shape[1] == 1 else out

    def describe(self) -> dict[str, Any]:
        version = str(self._trt.__version__) if self._trt is not None else None
        n_features = self._engine.n_features if self._engine is not None else None
        return {"kind": "tensorrt", "device": "cuda", "version": version,
                "n_features": n_features}


_BACKENDS: dict[str, Callable[..., Backend]] = {
    "xgboost": XGBoostBackend,
    "keras": KerasBackend,
    "tensorrt": TensorRTBackend,
}


def make_backend(kind: str, device: str, **options: Any) -> Backend:
    """The backend for a model KIND on DEVICE (as `capability.choose_backend` chose it)."""
    factory = _BACKENDS.get(kind)
    if factory is None:
        raise BackendError(f"unknown backend kind {kind!r}: expected one of "
                           f"{', '.join(_BACKENDS)}")
    return factory(device=device, **options)
