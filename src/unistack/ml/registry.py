"""The model registry: var/models/<name>/<version>/ holds a model file and metadata.json.

Versions are whole numbers that only grow. A version appears whole or not at all: it is
written into a hidden temp directory and renamed into place. metadata.json records the
feature names, the backend, when it was created, the model file's sha256 and the
training metrics; `load` checks the sha256 before anything serves the model.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
METADATA = "metadata.json"


class ModelError(Exception):
    """A model or version is missing, malformed or does not match its checksum."""


class ModelVersion(NamedTuple):
    name: str
    version: int
    directory: Path
    metadata: dict[str, Any]

    @property
    def model_file(self) -> Path:
        return self.directory / str(self.metadata["file"])

    @property
    def feature_names(self) -> list[str]:
        return list(self.metadata["feature_names"])


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ModelError(f"model name {name!r} is invalid: expected lower-case letters, "
                         "digits, '-' or '_' (at most 64, starting with a letter or digit)")
    return name


class ModelRegistry:
    """Versions of every model under ROOT (var/models)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _NAME.fullmatch(p.name))

    def versions(self, name: str) -> list[ModelVersion]:
        directory = self.root / check_name(name)
        if not directory.is_dir():
            return []
        numbers = sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())
        return [self._read(name, number) for number in numbers]

    def get(self, name: str, version: int | None = None) -> ModelVersion:
        """VERSION of NAME, or its newest version when VERSION is None."""
        versions = self.versions(name)
        if not versions:
            known = ", ".join(self.names()) or "none"
            raise ModelError(f"no model named {name!r} in {self.root} (models: {known}); "
                             "train one with `unistack ml train`")
        if version is None:
            return versions[-1]
        for candidate in versions:
            if candidate.version == version:
                return candidate
        numbers = ", ".join(str(v.version) for v in versions)
        raise ModelError(f"model {name!r} has no version {version} (versions: {numbers})")

    def verify(self, model: ModelVersion) -> ModelVersion:
        """MODEL, after checking its file against the sha256 in its metadata."""
        actual = sha256_of(model.model_file)
        if actual != model.metadata["sha256"]:
            raise ModelError(
                f"model {model.name} v{model.version} failed its checksum ({model.model_file} "
                f"has sha256 {actual[:12]}…, its metadata expects "
                f"{str(model.metadata['sha256'])[:12]}…); run `scripts/manage_production.sh "
                "ml train` or restore var/models from a backup")
        return model

    def check(self, model: ModelVersion) -> str:
        """"ok", or why MODEL cannot be served (its checksum, a missing file)."""
        try:
            self.verify(model)
        except (ModelError, OSError) as exc:
            return str(exc) if isinstance(exc, ModelError) else f"unreadable: {exc}"
        return "ok"

    def register(self, name: str, model_file: Path, metadata: dict[str, Any]) -> ModelVersion:
        """Copy MODEL_FILE in as the next version of NAME, with METADATA plus checksum."""
        parent = self.root / check_name(name)
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=parent))
        try:
            shutil.copyfile(model_file, staging / model_file.name)
            record = {**metadata, "name": name, "file": model_file.name,
                      "sha256": sha256_of(staging / model_file.name),
                      "created": metadata.get("created", time.time())}
            return self._publish(name, parent, staging, record)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _publish(self, name: str, parent: Path, staging: Path,
                 record: dict[str, Any]) -> ModelVersion:
        while True:
            number = max((v.version for v in self.versions(name)), default=0) + 1
            record["version"] = number
            (staging / METADATA).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
            os.chmod(staging, 0o750)  # noqa: S103 -- var/models is 0750: group may read models
            try:
                staging.rename(parent / str(number))  # atomic; fails if another got there
            except OSError:
                continue
            return self._read(name, number)

    def _read(self, name: str, number: int) -> ModelVersion:
        directory = self.root / name / str(number)
        try:
            metadata = json.loads((directory / METADATA).read_text())
        except (OSError, ValueError) as exc:
            raise ModelError(f"{directory / METADATA} is unreadable: {exc}") from exc
        for key in ("file", "sha256", "feature_names", "backend"):
            if key not in metadata:
                raise ModelError(f"{directory / METADATA} lacks {key!r}")
        return ModelVersion(name, number, directory, metadata)
