"""The model registry: versions appear whole, grow, and are checked before use."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from unistack.ml.registry import ModelError, ModelRegistry, check_name, sha256_of

META = {"backend": "xgboost", "feature_names": ["a", "b"], "metrics": {"auc": 0.6}}


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.ubj"
    path.write_bytes(b"\x00model-bytes\x01" * 100)
    return path


def test_register_numbers_versions_and_records_a_checksum(
    tmp_path: Path, model_file: Path
) -> None:
    registry = ModelRegistry(tmp_path / "models")
    first = registry.register("alpha", model_file, META)
    second = registry.register("alpha", model_file, META)
    assert (first.version, second.version) == (1, 2)
    assert second.model_file.read_bytes() == model_file.read_bytes()
    assert second.metadata["sha256"] == sha256_of(model_file)
    assert second.feature_names == ["a", "b"]
    assert json.loads((second.directory / "metadata.json").read_text())["version"] == 2
    assert registry.get("alpha").version == 2
    assert registry.get("alpha", 1).version == 1
    assert registry.names() == ["alpha"]
    assert not list((tmp_path / "models" / "alpha").glob(".staging-*"))


def test_concurrent_registrations_get_distinct_versions(tmp_path: Path, model_file: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    threads = [threading.Thread(target=registry.register, args=("beta", model_file, META))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [v.version for v in registry.versions("beta")] == list(range(1, 9))


def test_missing_models_and_versions_are_named(tmp_path: Path, model_file: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    with pytest.raises(ModelError, match=r"no model named 'ghost'.*unistack ml train"):
        registry.get("ghost")
    registry.register("alpha", model_file, META)
    with pytest.raises(ModelError, match=r"no version 7 \(versions: 1\)"):
        registry.get("alpha", 7)


def test_a_tampered_file_fails_verification(tmp_path: Path, model_file: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    version = registry.register("alpha", model_file, META)
    assert registry.verify(version) == version
    version.model_file.write_bytes(b"tampered")
    with pytest.raises(ModelError, match=r"model alpha v1 failed its checksum .*ml train"):
        registry.verify(version)
    assert registry.check(version).startswith("model alpha v1 failed its checksum")
    version.model_file.unlink()
    assert registry.check(version).startswith("unreadable")


def test_malformed_metadata_is_reported(tmp_path: Path, model_file: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    version = registry.register("alpha", model_file, META)
    (version.directory / "metadata.json").write_text("{not json")
    with pytest.raises(ModelError, match="unreadable"):
        registry.get("alpha")
    (version.directory / "metadata.json").write_text(json.dumps({"file": "model.ubj"}))
    with pytest.raises(ModelError, match="lacks 'sha256'"):
        registry.get("alpha")


@pytest.mark.parametrize("name", ["", "Upper", "../up", "a b", "x" * 65, "-lead"])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(ModelError, match="expected lower-case"):
        check_name(name)
