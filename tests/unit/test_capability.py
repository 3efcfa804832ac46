"""The capability report: the real probe degrades to CPU; fake modules exercise the GPU
branches (NVML devices, CuPy, TensorFlow GPUs, TensorRT, a CUDA XGBoost build)."""

from __future__ import annotations

import json
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from unistack.ml.capability import (
    MODEL_KINDS,
    Capabilities,
    Chooser,
    Device,
    as_json,
    choose_all,
    choose_backend,
    probe_capabilities,
    render,
)

GIB = 2**30
LIBRARY_NAMES = ("NVML", "cupy", "tensorflow", "tensorrt", "xgboost")


def importer_of(**modules: Any) -> Callable[[str], Any]:
    """An importer that knows only MODULES; an Exception value is raised on import."""

    def load(name: str) -> Any:
        if name not in modules:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        if isinstance(modules[name], Exception):
            raise modules[name]
        return modules[name]

    return load


def fake_pynvml(calls: list[str], name: Any = "NVIDIA GH200 480GB") -> SimpleNamespace:
    memory = SimpleNamespace(total=96 * GIB, free=90 * GIB, used=6 * GIB)
    return SimpleNamespace(
        nvmlInit=lambda: calls.append("init"),
        nvmlShutdown=lambda: calls.append("shutdown"),
        nvmlSystemGetDriverVersion=lambda: "570.86.15",
        nvmlDeviceGetCount=lambda: 1,
        nvmlDeviceGetHandleByIndex=lambda index: f"handle-{index}",
        nvmlDeviceGetName=lambda handle: name,
        nvmlDeviceGetMemoryInfo=lambda handle: memory,
    )


def fake_cupy(device_count: Callable[[], int] = lambda: 1) -> SimpleNamespace:
    runtime = SimpleNamespace(getDeviceCount=device_count, runtimeGetVersion=lambda: 12040)
    return SimpleNamespace(__version__="13.3.0", float32=np.float32, arange=np.arange,
                           cuda=SimpleNamespace(runtime=runtime))


def fake_xgboost(cuda: bool) -> SimpleNamespace:
    return SimpleNamespace(__version__="3.2.0", build_info=lambda: {"USE_CUDA": cuda})


def fake_tensorflow(gpus: int, built_with_cuda: bool = True) -> SimpleNamespace:
    devices = [SimpleNamespace(name=f"/physical_device:GPU:{i}") for i in range(gpus)]
    return SimpleNamespace(
        __version__="2.17.0",
        config=SimpleNamespace(list_physical_devices=lambda kind: devices),
        test=SimpleNamespace(is_built_with_cuda=lambda: built_with_cuda),
    )


def gh200(**overrides: Any) -> Capabilities:
    """The full GPU stack, faked; OVERRIDES replace (or, as None, remove) modules."""
    modules: dict[str, Any] = {
        "pynvml": fake_pynvml([]), "cupy": fake_cupy(), "tensorflow": fake_tensorflow(1),
        "tensorrt": SimpleNamespace(__version__="10.3.0"), "xgboost": fake_xgboost(True),
    }
    modules.update(overrides)
    return probe_capabilities(importer_of(**{k: v for k, v in modules.items() if v}))


def test_real_probe_never_raises_and_explains_each_missing_library() -> None:
    caps = probe_capabilities()

    assert tuple(lib.name for lib in caps.libraries) == LIBRARY_NAMES
    for lib in caps.libraries:
        assert lib.detail
        assert "\n" not in lib.detail
    if not caps.gpu_usable:  # this machine: no GPU, so XGBoost falls back to CPU
        assert choose_backend("xgboost", caps).device == "cpu"
        assert choose_backend("tensorrt", caps).device is None
    if not caps.nvml.ok:
        assert caps.devices == ()


def test_each_missing_library_is_one_line_with_the_fix() -> None:
    caps = probe_capabilities(importer_of())

    assert [lib.line for lib in caps.libraries] == [
        "NVML: not installed (pip install unistack[gpu], which brings nvidia-ml-py)",
        "cupy: not installed (pip install unistack[gpu])",
        "tensorflow: not installed (pip install unistack[tf])",
        "tensorrt: not installed (pip install unistack[gpu])",
        "xgboost: not installed (pip install unistack[ml])",
    ]
    assert not caps.gpu_usable
    assert all(choice.device is None for choice in choose_all(caps).values())


def test_fake_nvml_with_one_device_reports_its_memory_and_shuts_down() -> None:
    calls: list[str] = []
    caps = probe_capabilities(importer_of(pynvml=fake_pynvml(calls, name=b"NVIDIA GH200")))

    assert caps.nvml.ok
    assert caps.nvml.detail == "driver 570.86.15, 1 device(s)"
    assert caps.devices == (Device(0, "NVIDIA GH200", 96 * GIB, 90 * GIB),)
    assert calls == ["init", "shutdown"]


def test_nvml_without_a_driver_says_so() -> None:
    # nvidia-ml-py names one NVMLError subclass per return code.
    library_not_found = type("NVMLError_LibraryNotFound", (Exception,), {})

    def init() -> None:
        raise library_not_found("NVML Shared Library Not Found")

    calls: list[str] = []
    pynvml = fake_pynvml(calls)
    pynvml.nvmlInit = init

    caps = probe_capabilities(importer_of(pynvml=pynvml))

    assert caps.nvml.line.startswith("NVML: libnvidia-ml.so.1 not found: no NVIDIA driver")
    assert caps.devices == ()
    assert calls == []  # never initialised, so nothing to shut down


def test_nvml_failing_after_init_still_shuts_down() -> None:
    calls: list[str] = []
    pynvml = fake_pynvml(calls)
    pynvml.nvmlDeviceGetCount = lambda: 1 / 0

    caps = probe_capabilities(importer_of(pynvml=pynvml))

    assert caps.nvml.line == "NVML: broken: ZeroDivisionError: division by zero"
    assert calls == ["init", "shutdown"]


def test_cuda_xgboost_build_and_a_cupy_device_run_xgboost_on_cuda() -> None:
    caps = gh200()

    assert caps.xgboost_cuda
    assert caps.cupy.detail == "13.3.0, CUDA runtime 12.4, 1 device(s), test kernel ran"
    assert choose_backend("xgboost", caps) == (
        "cuda", "xgboost CUDA build and a usable CUDA device")
    assert choose_backend("keras", caps).device == "gpu"
    assert choose_backend("tensorrt", caps).device == "cuda"


def test_cuda_build_without_cupy_falls_back_to_cpu_and_says_why() -> None:
    caps = gh200(cupy=None)

    choice = choose_backend("xgboost", caps)

    assert choice.device == "cpu"
    assert choice.reason == "CPU fallback: cupy: not installed (pip install unistack[gpu])"


def test_require_gpu_refuses_the_cpu_fallback_but_keeps_a_gpu() -> None:
    assert choose_backend("xgboost", gh200(), require_gpu=True).device == "cuda"
    assert choose_backend("keras", gh200(), require_gpu=True).device == "gpu"

    cpu_build = choose_backend("xgboost", gh200(xgboost=fake_xgboost(False)), require_gpu=True)
    assert cpu_build == (None, "GPU required but xgboost is a CPU-only build")
    no_tf_gpu = gh200(tensorflow=fake_tensorflow(0, built_with_cuda=False))
    assert choose_backend("keras", no_tf_gpu, require_gpu=True) == (
        None, "GPU required but TensorFlow sees no GPU")
    assert choose_backend("keras", no_tf_gpu).device == "cpu"
    assert "built without CUDA" in no_tf_gpu.tensorflow.detail


def test_tensorrt_needs_a_device_even_when_installed() -> None:
    choice = choose_backend("tensorrt", gh200(cupy=fake_cupy(lambda: 0)))

    assert choice.device is None
    assert choice.reason == ("TensorRT needs a CUDA device with CuPy: "
                             "cupy: no CUDA device visible (getDeviceCount() == 0)")


def test_a_library_that_raises_on_use_is_reported_not_raised() -> None:
    def insufficient_driver() -> int:
        raise RuntimeError("cudaErrorInsufficientDriver:\nCUDA driver version is insufficient")

    caps = gh200(cupy=fake_cupy(insufficient_driver),
                 tensorflow=RuntimeError("libcudnn.so.9: cannot open shared object file"))

    assert caps.cupy.line == ("cupy: broken: RuntimeError: cudaErrorInsufficientDriver: "
                              "CUDA driver version is insufficient")
    assert caps.tensorflow.line == ("tensorflow: installed but fails to import: RuntimeError: "
                                    "libcudnn.so.9: cannot open shared object file")
    assert not caps.gpu_usable
    assert choose_backend("xgboost", caps).device == "cpu"


def test_render_mentions_every_library_and_model_kind() -> None:
    for caps in (probe_capabilities(importer_of()), gh200()):
        text = render(caps, choose_all(caps))

        for name in (*LIBRARY_NAMES, *MODEL_KINDS):
            assert name in text
    assert "NVIDIA GH200 480GB  96.0 GiB total, 90.0 GiB free" in render(gh200(), {})


def test_as_json_is_json_with_devices_libraries_and_choices() -> None:
    caps = gh200()

    data = json.loads(as_json(caps, choose_all(caps)))

    assert data["devices"][0]["free_bytes"] == 90 * GIB
    assert set(data["libraries"]) == set(LIBRARY_NAMES)
    assert data["backends"]["xgboost"]["device"] == "cuda"
    assert data["gpu_usable"] is True


def test_unknown_model_kind_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown model kind 'torch'"):
        choose_backend("torch", gh200())


def test_the_engines_chooser_looks_at_tensorflow_only_for_a_keras_model() -> None:
    imported: list[str] = []
    known = importer_of(xgboost=fake_xgboost(cuda=False), tensorflow=fake_tensorflow(gpus=0))

    def recording(name: str) -> Any:
        imported.append(name)
        return known(name)

    chooser = Chooser(require_gpu=False, importer=recording)
    assert chooser("xgboost").device == "cpu"
    assert "tensorflow" not in imported  # an XGBoost-only engine never pays its import
    assert chooser("keras").device == "cpu"
    assert imported.count("tensorflow") == 1
    chooser("keras")
    assert imported.count("tensorflow") == 1  # looked at once
