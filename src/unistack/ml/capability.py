"""The capability report: which GPU devices and ML libraries this process can use.

`probe_capabilities` looks once, at start: NVML devices, CuPy (a tiny kernel must run),
TensorFlow's GPU list, TensorRT, and whether XGBoost is a CUDA build. A check never
raises: a missing or broken library comes back as one line saying why. `choose_backend`
is the pure decision on top of the report: which device each model kind runs on, or
why it cannot run (`require_gpu`, the STRICT_GPU=1 mode, turns a CPU fallback into that).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import platform
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple, TypeVar

Importer = Callable[[str], Any]
T = TypeVar("T")

MODEL_KINDS = ("xgboost", "keras", "tensorrt")
_INSTALL_HINTS = {
    "pynvml": "pip install unistack[gpu], which brings nvidia-ml-py",
    "cupy": "pip install unistack[gpu]",
    "tensorflow": "pip install unistack[tf]",
    "tensorrt": "pip install unistack[gpu]",
    "xgboost": "pip install unistack[ml]",
}
_MAX_DETAIL = 200
# nvidia-ml-py raises one NVMLError subclass per return code, named NVMLError_<code>.
_NVML_INIT_FAILURES = {
    "NVMLError_LibraryNotFound": "libnvidia-ml.so.1 not found: no NVIDIA driver "
    "(in a container, NVIDIA_DRIVER_CAPABILITIES must include 'utility')",
    "NVMLError_DriverNotLoaded": "the NVIDIA kernel driver is not loaded",
    "NVMLError_NoPermission": "no permission to open the NVIDIA device files",
}


class Library(NamedTuple):
    name: str
    ok: bool  # importable and working
    detail: str  # one line: what works, or why not
    version: str = ""

    @property
    def line(self) -> str:
        return f"{self.name}: {self.detail}"


class Device(NamedTuple):
    ordinal: int  # NVML's device index
    name: str
    total_bytes: int
    free_bytes: int


class Capabilities(NamedTuple):
    nvml: Library
    devices: tuple[Device, ...]
    cupy: Library  # ok: a CUDA device is visible and a kernel ran on it
    tensorflow: Library
    tf_gpus: tuple[str, ...]
    tensorrt: Library
    xgboost: Library
    xgboost_cuda: bool

    @property
    def libraries(self) -> tuple[Library, ...]:
        return (self.nvml, self.cupy, self.tensorflow, self.tensorrt, self.xgboost)

    @property
    def gpu_usable(self) -> bool:
        """A CUDA device that runs kernels; the backends feed it CuPy arrays."""
        return self.cupy.ok


_NO_DEVICES: tuple[Device, ...] = ()
_NO_GPUS: tuple[str, ...] = ()


class Choice(NamedTuple):
    device: str | None  # "cuda", "gpu" (TensorFlow's name) or "cpu"; None: cannot serve
    reason: str


class _Unusable(Exception):
    """The library is present but cannot be used; the message is the one line why."""


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 3] + "..."


def import_failure(module: str, exc: Exception) -> str:
    """One line: why MODULE did not import (not installed, with the fix, or broken)."""
    if isinstance(exc, ModuleNotFoundError) and exc.name == module:
        return f"not installed ({_INSTALL_HINTS[module]})"
    return f"installed but fails to import: {type(exc).__name__}: {_one_line(exc)}"


def _guarded(label: str, module: str, importer: Importer,
             inspect: Callable[[Any], tuple[Library, T]], empty: T) -> tuple[Library, T]:
    """Import MODULE and INSPECT it; any failure becomes a not-ok Library, never a raise."""
    try:
        found = importer(module)
    except Exception as exc:
        return Library(label, False, import_failure(module, exc)), empty
    try:
        return inspect(found)
    except _Unusable as exc:
        return Library(label, False, str(exc)), empty
    except Exception as exc:
        return Library(label, False, f"broken: {type(exc).__name__}: {_one_line(exc)}"), empty


def _text(value: Any) -> str:
    # Older nvidia-ml-py releases return bytes for names and versions.
    return value.decode() if isinstance(value, bytes) else str(value)


def _nvml_init(pynvml: Any) -> None:
    try:
        pynvml.nvmlInit()
    except Exception as exc:
        known = _NVML_INIT_FAILURES.get(type(exc).__name__)
        raise _Unusable(known or f"nvmlInit failed: {_one_line(exc)}") from exc


def _nvml_device(pynvml: Any, ordinal: int) -> Device:
    handle = pynvml.nvmlDeviceGetHandleByIndex(ordinal)
    memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
    name = _text(pynvml.nvmlDeviceGetName(handle))
    return Device(ordinal, name, int(memory.total), int(memory.free))


def _inspect_nvml(pynvml: Any) -> tuple[Library, tuple[Device, ...]]:
    _nvml_init(pynvml)
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        count = int(pynvml.nvmlDeviceGetCount())
        devices = tuple(_nvml_device(pynvml, ordinal) for ordinal in range(count))
    finally:
        pynvml.nvmlShutdown()
    if not devices:
        raise _Unusable(f"driver {driver} loaded but no GPU visible (NVIDIA_VISIBLE_DEVICES?)")
    return Library("NVML", True, f"driver {driver}, {len(devices)} device(s)", driver), devices


def _cuda_version(encoded: int) -> str:
    return f"{encoded // 1000}.{encoded % 1000 // 10}"  # 12040 -> "12.4"


def _inspect_cupy(cupy: Any) -> tuple[Library, int]:
    count = int(cupy.cuda.runtime.getDeviceCount())
    if count < 1:
        raise _Unusable("no CUDA device visible (getDeviceCount() == 0)")
    # Allocating and launching proves the driver, runtime and NVRTC actually work.
    total = float((cupy.arange(8, dtype=cupy.float32) * 2).sum())
    if total != 56.0:
        raise _Unusable(f"test kernel returned {total}, expected 56.0")
    runtime = _cuda_version(int(cupy.cuda.runtime.runtimeGetVersion()))
    detail = f"{cupy.__version__}, CUDA runtime {runtime}, {count} device(s), test kernel ran"
    return Library("cupy", True, detail, str(cupy.__version__)), count


def _inspect_tensorflow(tf: Any) -> tuple[Library, tuple[str, ...]]:
    version = str(tf.__version__)
    gpus = tuple(str(device.name) for device in tf.config.list_physical_devices("GPU"))
    if gpus:
        detail = f"{version}, GPU(s): {', '.join(gpus)}"
    elif not tf.test.is_built_with_cuda():
        detail = f"{version}, built without CUDA{_aarch64_note('PyPI')}: CPU only"
    else:
        detail = f"{version}, built with CUDA but no GPU visible: CPU only"
    return Library("tensorflow", True, detail, version), gpus


def _aarch64_note(source: str) -> str:
    """Why a build has no CUDA, said only where it is the reason: on aarch64 (GH200)."""
    if platform.machine() != "aarch64":
        return ""
    return f" ({source} aarch64 wheels are CPU-only)"


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """TensorFlow's C++ runtime writes absl/oneDNN/CUDA notices straight to file
    descriptor 2 at import: keep them out of the report (they are not findings)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _inspect_tensorrt(trt: Any) -> tuple[Library, None]:
    version = str(trt.__version__)
    return Library("tensorrt", True, version, version), None


def _inspect_xgboost(xgboost: Any) -> tuple[Library, bool]:
    version = str(xgboost.__version__)
    cuda = bool(xgboost.build_info().get("USE_CUDA", False))
    build = "CUDA build" if cuda else f"CPU-only build{_aarch64_note('xgboost-cpu or')}"
    return Library("xgboost", True, f"{version}, {build}", version), cuda


def probe_capabilities(importer: Importer = importlib.import_module,
                       with_tensorflow: bool = True) -> Capabilities:
    """Look at every device and library once; never raises. WITH_TENSORFLOW False skips
    TensorFlow, whose import alone takes seconds."""
    nvml, devices = _guarded("NVML", "pynvml", importer, _inspect_nvml, _NO_DEVICES)
    cupy, _ = _guarded("cupy", "cupy", importer, _inspect_cupy, 0)
    tensorflow: Library = Library("tensorflow", False, "not looked at yet")
    tf_gpus: tuple[str, ...] = _NO_GPUS
    if with_tensorflow:
        with _quiet_stderr():
            tensorflow, tf_gpus = _guarded("tensorflow", "tensorflow", importer,
                                           _inspect_tensorflow, _NO_GPUS)
    tensorrt, _ = _guarded("tensorrt", "tensorrt", importer, _inspect_tensorrt, None)
    xgboost, xgboost_cuda = _guarded("xgboost", "xgboost", importer, _inspect_xgboost, False)
    return Capabilities(nvml, devices, cupy, tensorflow, tf_gpus, tensorrt, xgboost,
                        xgboost_cuda)


def _cpu_or_refuse(why: str, require_gpu: bool) -> Choice:
    if require_gpu:
        return Choice(None, f"GPU required but {why}")
    return Choice("cpu", f"CPU fallback: {why}")


def _choose_xgboost(caps: Capabilities, require_gpu: bool) -> Choice:
    if not caps.xgboost.ok:
        return Choice(None, caps.xgboost.line)
    if caps.xgboost_cuda and caps.gpu_usable:
        return Choice("cuda", "xgboost CUDA build and a usable CUDA device")
    why = caps.cupy.line if caps.xgboost_cuda else "xgboost is a CPU-only build"
    return _cpu_or_refuse(why, require_gpu)


def _choose_keras(caps: Capabilities, require_gpu: bool) -> Choice:
    if not caps.tensorflow.ok:
        return Choice(None, caps.tensorflow.line)
    if caps.tf_gpus:
        return Choice("gpu", f"TensorFlow sees {', '.join(caps.tf_gpus)}")
    return _cpu_or_refuse("TensorFlow sees no GPU", require_gpu)


def _choose_tensorrt(caps: Capabilities, require_gpu: bool) -> Choice:
    # TensorRT has no CPU mode, so require_gpu changes nothing here.
    if not caps.tensorrt.ok:
        return Choice(None, caps.tensorrt.line)
    if not caps.gpu_usable:
        return Choice(None, f"TensorRT needs a CUDA device with CuPy: {caps.cupy.line}")
    return Choice("cuda", f"TensorRT {caps.tensorrt.version} and a usable CUDA device")


_CHOOSERS: dict[str, Callable[[Capabilities, bool], Choice]] = {
    "xgboost": _choose_xgboost,
    "keras": _choose_keras,
    "tensorrt": _choose_tensorrt,
}


def choose_backend(model_kind: str, caps: Capabilities, require_gpu: bool = False) -> Choice:
    """Where MODEL_KIND runs given CAPS; device None means it cannot run here (see reason)."""
    chooser = _CHOOSERS.get(model_kind)
    if chooser is None:
        raise ValueError(f"unknown model kind {model_kind!r}: expected one of "
                         f"{', '.join(MODEL_KINDS)}")
    return chooser(caps, require_gpu)


class Chooser:
    """Backend choices made when first needed, for the engine: TensorFlow is looked at
    only once a Keras model is to be served, so an XGBoost-only engine starts in a
    fraction of a second instead of paying TensorFlow's import."""

    def __init__(self, require_gpu: bool, importer: Importer = importlib.import_module) -> None:
        self._require, self._importer = require_gpu, importer
        self._caps: Capabilities | None = None
        self._with_tensorflow = False

    def __call__(self, model_kind: str) -> Choice:
        needs_tensorflow = model_kind == "keras" and not self._with_tensorflow
        if self._caps is None or needs_tensorflow:
            self._with_tensorflow = self._with_tensorflow or needs_tensorflow
            self._caps = probe_capabilities(self._importer, self._with_tensorflow)
        return choose_backend(model_kind, self._caps, self._require)


def choose_all(caps: Capabilities, require_gpu: bool = False) -> dict[str, Choice]:
    return {kind: choose_backend(kind, caps, require_gpu) for kind in MODEL_KINDS}


def _gib(size: int) -> str:
    return f"{size / 2**30:.1f} GiB"


def render(caps: Capabilities, choices: Mapping[str, Choice]) -> str:
    """The report for humans: devices, one line per library, one line per model kind."""
    lines = [f"Machine: {platform.machine()}", "GPU devices (NVML):"]
    lines += [f"  {d.ordinal}  {d.name}  {_gib(d.total_bytes)} total, {_gib(d.free_bytes)} free"
              for d in caps.devices] or ["  none"]
    lines.append("Libraries:")
    lines += [f"  {'ok' if lib.ok else '--'}  {lib.name:<10}  {lib.detail}"
              for lib in caps.libraries]
    lines.append("Backends:")
    lines += [f"  {kind:<8}  {choice.device or 'none':<4}  {choice.reason}"
              for kind, choice in choices.items()]
    return "\n".join(lines)


def as_dict(caps: Capabilities, choices: Mapping[str, Choice]) -> dict[str, Any]:
    return {
        "machine": platform.machine(),
        "devices": [device._asdict() for device in caps.devices],
        "libraries": {lib.name: lib._asdict() for lib in caps.libraries},
        "tf_gpus": list(caps.tf_gpus),
        "xgboost_cuda": caps.xgboost_cuda,
        "gpu_usable": caps.gpu_usable,
        "backends": {kind: choice._asdict() for kind, choice in choices.items()},
    }


def as_json(caps: Capabilities, choices: Mapping[str, Choice]) -> str:
    return json.dumps(as_dict(caps, choices), indent=2, sort_keys=True)
