"""`unistack ml doctor` and `unistack ml models` as an operator runs them."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

from unistack.ml.registry import ModelRegistry


def run(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {"PATH": "/usr/bin:/bin", "UNISTACK_HOME": str(home), **env}
    return subprocess.run([sys.executable, "-m", "unistack", *args], env=environ,
                          capture_output=True, text=True, timeout=60, check=False)


def test_doctor_explains_the_cpu_fallback(tmp_path: Path) -> None:
    done = run(tmp_path, "ml", "doctor")
    assert done.returncode == 0, done.stderr
    assert "xgboost   cpu" in done.stdout
    assert "cupy" in done.stdout and "not installed" in done.stdout
    report = json.loads(run(tmp_path, "ml", "doctor", "--json").stdout)
    assert report["backends"]["xgboost"]["device"] == "cpu"


def test_doctor_with_a_required_gpu_refuses_the_cpu(tmp_path: Path) -> None:
    done = run(tmp_path, "ml", "doctor", ML_REQUIRE_GPU="1")
    assert done.returncode == 1
    assert "GPU required" in done.stdout


def test_models_lists_every_version(tmp_path: Path) -> None:
    assert "no models" in run(tmp_path, "ml", "models").stdout
    model = tmp_path / "model.ubj"
    model.write_bytes(b"m")
    registry = ModelRegistry(tmp_path / "var" / "models")
    for _ in range(2):
        registry.register("alpha", model, {"backend": "xgboost", "feature_names": ["a"],
                                           "metrics": {"auc": 0.61}})
    listed = json.loads(run(tmp_path, "ml", "models", "--json").stdout)
    assert [(m["name"], m["version"]) for m in listed] == [("alpha", 1), ("alpha", 2)]
    assert "auc=0.61" in run(tmp_path, "ml", "models").stdout


def test_models_marks_a_version_that_fails_its_checksum_corrupt(tmp_path: Path) -> None:
    model = tmp_path / "model.ubj"
    model.write_bytes(b"m")
    registry = ModelRegistry(tmp_path / "var" / "models")
    for _ in range(2):
        registry.register("alpha", model, {"backend": "xgboost", "feature_names": ["a"]})
    (registry.get("alpha", 1).model_file).write_bytes(b"m!")
    listed = run(tmp_path, "ml", "models")
    assert listed.returncode == 1
    [first, why, second] = listed.stdout.splitlines()
    assert "v1" in first and "CORRUPT" in first and "v2" in second and " ok " in second
    assert why.strip().startswith("model alpha v1 failed its checksum") and "ml train" in why
    rows = json.loads(run(tmp_path, "ml", "models", "--json").stdout)
    assert rows[0]["check"].startswith("model alpha v1 failed its checksum")
    assert rows[1]["check"] == "ok"


def test_doctor_names_this_machine_and_keeps_tensorflow_noise_out(tmp_path: Path) -> None:
    done = run(tmp_path, "ml", "doctor")
    assert f"Machine: {platform.machine()}" in done.stdout
    if platform.machine() != "aarch64":
        assert "aarch64" not in done.stdout
    noise = ("absl::InitializeLog", "oneDNN custom operations", "cpu_feature_guard")
    assert not any(word in done.stdout + done.stderr for word in noise), done.stderr


def test_predict_refuses_a_timeout_that_is_not_positive(tmp_path: Path) -> None:
    for bad in ("0", "-1", "nan", "soon"):
        done = run(tmp_path, "ml", "predict", "--rows", "[[1]]", "--timeout", bad)
        assert done.returncode == 2 and f"expected seconds > 0, got '{bad}'" in done.stderr
