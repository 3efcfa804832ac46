"""ml.gpu_health against a fake NVML module (no GPU on these machines): every figure the
GPU card shows, None for what a device does not support, XID events counted, and a
host without NVML said plainly."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from unistack.ml.gpu_health import GpuHealth


class NotSupported(Exception):
    pass


class Timeout(Exception):
    pass


class FakeNvml:
    NVML_TEMPERATURE_GPU = 0
    NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
    NVML_VOLATILE_ECC = 0
    nvmlEventTypeXidCriticalError = 8

    def __init__(self, devices: int = 1, remap: bool = True) -> None:
        self.handles = [f"gpu{i}" for i in range(devices)]
        self.remap = remap
        self.xids: list[Any] = []

    def nvmlInit(self) -> None: ...
    def nvmlDeviceGetCount(self) -> int: return len(self.handles)
    def nvmlDeviceGetHandleByIndex(self, i: int) -> str: return self.handles[i]
    def nvmlDeviceGetName(self, h: str) -> bytes: return b"NVIDIA GH200 480GB"
    def nvmlDeviceGetMemoryInfo(self, h: str) -> Any:
        return SimpleNamespace(used=10 * 2**30, total=96 * 2**30, free=86 * 2**30)
    def nvmlDeviceGetUtilizationRates(self, h: str) -> Any: return SimpleNamespace(gpu=37)
    def nvmlDeviceGetTemperature(self, h: str, sensor: int) -> int: return 54
    def nvmlDeviceGetPowerUsage(self, h: str) -> int: return 312_500  # milliwatts
    def nvmlDeviceGetTotalEccErrors(self, h: str, kind: int, counter: int) -> int: return 0

    def nvmlDeviceGetRemappedRows(self, h: str) -> tuple[int, int, int, int]:
        if not self.remap:
            raise NotSupported
        return (2, 1, 1, 0)

    def nvmlEventSetCreate(self) -> str: return "set"
    def nvmlDeviceRegisterEvents(self, h: str, kinds: int, events: str) -> None: ...

    def nvmlEventSetWait_v2(self, events: str, timeout_ms: int) -> Any:
        if not self.xids:
            raise Timeout
        return self.xids.pop(0)


def health(nvml: Any) -> GpuHealth:
    return GpuHealth(importer=lambda name: nvml)


def test_every_figure_of_a_device_is_reported() -> None:
    [device] = health(FakeNvml()).report()["devices"]
    assert device == {
        "index": 0, "name": "NVIDIA GH200 480GB", "memory_used_bytes": 10 * 2**30,
        "memory_total_bytes": 96 * 2**30, "utilization_percent": 37, "temperature_c": 54,
        "power_watts": 312.5, "xid_errors": 0, "ecc_uncorrected": 0,
        "remapped_rows_pending": True, "remapped_rows_failed": False}


def test_xid_events_are_counted_per_device() -> None:
    nvml = FakeNvml(devices=2)
    gpus = health(nvml)
    gpus.report()
    nvml.xids = [SimpleNamespace(device="gpu1", eventData=79),
                 SimpleNamespace(device="gpu1", eventData=48)]
    report = gpus.report()
    assert [d["xid_errors"] for d in report["devices"]] == [0, 2]
    assert gpus.report()["devices"][1]["xid_errors"] == 2  # a count, not a rate


def test_what_a_device_does_not_support_is_none_not_an_error() -> None:
    [device] = health(FakeNvml(remap=False)).report()["devices"]
    assert device["remapped_rows_pending"] is None and device["remapped_rows_failed"] is None
    assert device["temperature_c"] == 54


def test_a_host_without_nvml_says_so_plainly() -> None:
    def missing(name: str) -> Any:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    report = GpuHealth(importer=missing).report()
    assert report["available"] is False and report["devices"] == []
    assert report["reason"].startswith("no GPU on this host: NVML not installed")


def test_a_driver_without_devices_is_not_available() -> None:
    report = health(FakeNvml(devices=0)).report()
    assert report["available"] is False
    assert "shows no device" in report["reason"]
