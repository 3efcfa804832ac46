"""GPU health from NVML, for the dashboard's GPU card (through the engine's /facts and
the hub's /status): per device its memory, utilisation, temperature and power, and the
error counters that NVIDIA's own Grafana dashboard leaves out: XID errors (counted from
NVML's critical-XID events since the engine started), uncorrected ECC errors and row
remapping (pending and failed). A figure the device does not support is None; a host
without a usable NVML says why in one line ("no GPU on this host: ...").

Written for NVML on a GH200 (nvidia-ml-py); tested here against a fake NVML module, since
these machines have no GPU.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable
from typing import Any

from unistack.ml.capability import import_failure

log = logging.getLogger("unistack.ml")

Importer = Callable[[str], Any]


class GpuHealth:
    """Opens NVML once (lazily) and reads every device on each `report()`."""

    def __init__(self, importer: Importer = importlib.import_module) -> None:
        self._importer = importer
        self._lock = threading.Lock()
        self._nvml: Any = None
        self._handles: list[Any] = []
        self._events: Any = None  # NVML event set for critical XIDs, where supported
        self._xids: dict[int, int] = {}
        self._reason = ""

    def report(self) -> dict[str, Any]:
        """{"available", "reason", "devices": [...]}; never raises."""
        with self._lock:
            if self._nvml is None and not self._reason:
                self._open()
            if self._nvml is None:
                return {"available": False, "reason": f"no GPU on this host: {self._reason}",
                        "devices": []}
            self._drain_xids()
            devices = [self._device(index, handle) for index, handle in enumerate(self._handles)]
        return {"available": True, "reason": f"{len(devices)} device(s) via NVML",
                "devices": devices}

    def _open(self) -> None:
        try:
            nvml = self._importer("pynvml")
        except Exception as exc:
            self._reason = f"NVML {import_failure('pynvml', exc)}"
            return
        try:
            nvml.nvmlInit()
            count = int(nvml.nvmlDeviceGetCount())
            handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        except Exception as exc:
            self._reason = f"NVML did not initialise ({type(exc).__name__}: {exc})"
            return
        if not handles:
            self._reason = "the NVIDIA driver is loaded but shows no device"
            return
        self._nvml, self._handles = nvml, handles
        self._events = self._xid_events(nvml, handles)

    def _xid_events(self, nvml: Any, handles: list[Any]) -> Any:
        try:
            events = nvml.nvmlEventSetCreate()
            for handle in handles:
                nvml.nvmlDeviceRegisterEvents(handle, nvml.nvmlEventTypeXidCriticalError, events)
        except Exception as exc:  # not supported (some vGPU and MIG setups): no XID count
            log.info("NVML XID events not available: %s", exc)
            return None
        self._xids = dict.fromkeys(range(len(handles)), 0)
        return events

    def _drain_xids(self) -> None:
        """Count the critical XID events that arrived since the last report (no wait)."""
        if self._events is None:
            return
        while True:
            try:
                data = self._nvml.nvmlEventSetWait_v2(self._events, 0)
            except Exception:  # NVMLError_Timeout: none waiting (or the set broke)
                return
            index = self._index_of(data.device)
            if index is not None:
                self._xids[index] += 1
                log.warning("GPU %d: XID %s", index, data.eventData)

    def _index_of(self, handle: Any) -> int | None:
        for index, known in enumerate(self._handles):
            if known == handle:
                return index
        return None

    def _device(self, index: int, handle: Any) -> dict[str, Any]:
        nvml = self._nvml
        memory = _read(lambda: nvml.nvmlDeviceGetMemoryInfo(handle))
        remapped = _read(lambda: nvml.nvmlDeviceGetRemappedRows(handle))
        name = _read(lambda: nvml.nvmlDeviceGetName(handle))
        return {
            "index": index,
            "name": name.decode() if isinstance(name, bytes) else name,
            "memory_used_bytes": int(memory.used) if memory is not None else None,
            "memory_total_bytes": int(memory.total) if memory is not None else None,
            "utilization_percent": _read(
                lambda: nvml.nvmlDeviceGetUtilizationRates(handle).gpu),
            "temperature_c": _read(
                lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)),
            "power_watts": _read(lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0),
            "xid_errors": self._xids.get(index) if self._events is not None else None,
            "ecc_uncorrected": _read(lambda: nvml.nvmlDeviceGetTotalEccErrors(
                handle, nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nvml.NVML_VOLATILE_ECC)),
            # (corrected rows, uncorrected rows, remapping pending, remapping failed)
            "remapped_rows_pending": bool(remapped[2]) if remapped is not None else None,
            "remapped_rows_failed": bool(remapped[3]) if remapped is not None else None,
        }


def _read(call: Callable[[], Any]) -> Any:
    """One NVML figure, or None where the device does not support it (or it failed)."""
    try:
        return call()
    except Exception:
        return None
