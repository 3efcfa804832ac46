"""The container and deployment files agree with each other and with the code.

One fact, many files: a port is a key in config.env, a listener in the registry
(unistack.services), an EXPOSE in Dockerfile.unified, a published port in the compose
files, a containerPort, a probe and a Service port in the Kubernetes manifests. These
tests read every one of them (the manifests as `kubectl kustomize` renders them) and fail
on the first that drifts, naming the file and the value.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path
from typing import Any

import pytest

from tests.static import (
    COMPOSE_FILES,
    DOCKERFILE,
    K8S,
    ROOT,
    compose_merged,
    dockerfile_stages,
    dockerfile_target,
    interpolate,
    load_compose,
    parse_duration,
    rendered,
    resolved,
    stop_budget,
    supervisord_sections,
)
from unistack import envfile
from unistack.cli import build_parser
from unistack.config import Settings, load_settings
from unistack.configkeys import (
    GENERATED_KEYS,
    KEYS_BY_NAME,
    PORT_KEYS,
    SECRET_KEYS,
    SERVICE_PREFIXES,
)
from unistack.dashboard.server import GRACEFUL_TIMEOUT
from unistack.services import REGISTRY, by_name

SERVICES = by_name()
CONFIG_ENV = ROOT / "config.env"
CONFIG_ENV_COPY = K8S / "base" / "config" / "config.env"
HUB_API = ROOT / "src" / "unistack" / "hub" / "api.py"
# What the scale-out overlay sets on top of config.env (its configMapGenerator).
SCALE_OUT_KEYS = {"UNISTACK_MODE", "UNISTACK_BIND_ADDRESS",
                  *(f"{prefix}_HOST" for prefix in SERVICE_PREFIXES)}
POD_NAME = "unistack-ml-engine-7d9f8b6c5-x2x7q"  # what the downward API gives, for example


# -- reading the rendered manifests ------------------------------------------------------------

def kinds(name: str, *wanted: str) -> list[dict[str, Any]]:
    return [doc for doc in rendered(name) if doc.get("kind") in wanted]


def workloads(name: str) -> list[dict[str, Any]]:
    return kinds(name, "StatefulSet", "Deployment")


def container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, f"{workload['metadata']['name']}: expected one container"
    return dict(containers[0])


def configmap(name: str) -> dict[str, str]:
    maps = [doc for doc in kinds(name, "ConfigMap")
            if doc["metadata"]["name"].startswith("unistack-config")]
    assert len(maps) == 1, f"{name}: expected one ConfigMap unistack-config-<hash>"
    return dict(maps[0].get("data") or {})


def runs(workload: dict[str, Any]) -> str | None:
    """The service a workload's container runs (`unistack run SERVICE`), None for the
    whole stack (`unistack start --foreground`)."""
    command = container(workload)["command"]
    return command[4] if command[3:4] == ["run"] else None


def workload_of(name: str, service: str) -> dict[str, Any]:
    found = [w for w in workloads(name) if runs(w) == service]
    assert len(found) == 1, f"{name}: expected one workload running {service}, not {len(found)}"
    return found[0]


def port_name(service: str) -> str:
    return service.replace("_", "-")  # a port name is a DNS label: no underscores


def container_ports(workload: dict[str, Any]) -> dict[str, int]:
    return {port["name"]: port["containerPort"] for port in container(workload)["ports"]}


def resolve_port(workload: dict[str, Any], port: int | str) -> int:
    return container_ports(workload)[port] if isinstance(port, str) else port


def explicit_env(workload: dict[str, Any]) -> dict[str, str]:
    """The container's `env`, with the downward API's pod name filled in."""
    values = {}
    for item in container(workload).get("env", []):
        source = item.get("valueFrom")
        if source:
            assert source.get("fieldRef", {}).get("fieldPath") == "metadata.name", item
            values[item["name"]] = POD_NAME
        else:
            values[item["name"]] = item["value"]
    return values


def image_target(workload: dict[str, Any]) -> str:
    image = str(container(workload)["image"])
    return image.rsplit(":", 1)[1]


def effective_env(name: str, workload: dict[str, Any]) -> dict[str, str]:
    """What the container's process sees: the image's ENV, then the ConfigMap (envFrom),
    then its own env, later ones winning (Kubernetes' and Docker's precedence)."""
    assert [ref["configMapRef"]["name"] for ref in container(workload)["envFrom"]] == [
        next(doc["metadata"]["name"] for doc in kinds(name, "ConfigMap"))]
    return {**dockerfile_target(image_target(workload)).env, **configmap(name),
            **explicit_env(workload)}


def settings_in(environ: dict[str, str], tmp_path: Path) -> Settings:
    """load_settings as the container would run it, every `<KEY>_FILE` pointed at a
    stand-in file (the real ones are the Secret's)."""
    environ = dict(environ)
    for key in SECRET_KEYS:
        if f"{key}_FILE" in environ:
            stand_in = tmp_path / key
            stand_in.write_text("s" * 32 if key in GENERATED_KEYS else "")
            environ[f"{key}_FILE"] = str(stand_in)
    return load_settings(environ, root=ROOT)


def config_settings(tmp_path: Path) -> Settings:
    """config.env as it stands, in an empty home (no developer's .env)."""
    return load_settings({"UNISTACK_HOME": str(tmp_path)}, root=ROOT)


def compose_service(document: Any) -> dict[str, Any]:
    services = document["services"]
    assert len(services) == 1, "expected one compose service (the unified container)"
    return dict(next(iter(services.values())))


def compose_variants() -> dict[str, dict[str, Any]]:
    return {"unified": compose_service(resolved(load_compose(COMPOSE_FILES[0]))),
            "unified+cpu": compose_service(compose_merged())}


def home() -> str:
    homes = {dockerfile_target(t).env["UNISTACK_HOME"] for t in ("cpu", "gpu")}
    assert len(homes) == 1, f"the targets disagree on UNISTACK_HOME: {homes}"
    return homes.pop()


ALL = ("base", "scale-out")


# The workloads each kustomization renders (a test checks): named here so that the
# parametrized tests are collected without running kubectl.
WORKLOADS = {
    "base": ("unistack",),
    "scale-out": ("unistack-dashboard", "unistack-hub", "unistack-ml-engine",
                  "unistack-prometheus", "unistack-redis"),
}
EVERY_WORKLOAD = [f"{name}:{workload}" for name, names in WORKLOADS.items()
                  for workload in names]


def every_workload() -> list[tuple[str, dict[str, Any]]]:
    return [(name, w) for name in ALL for w in workloads(name)]


def workload_named(item: str) -> tuple[str, dict[str, Any]]:
    name, workload = item.split(":")
    (found,) = [w for w in workloads(name) if w["metadata"]["name"] == workload]
    return name, found


def test_kustomizations_render_the_named_workloads() -> None:
    for name, names in WORKLOADS.items():
        assert sorted(w["metadata"]["name"] for w in workloads(name)) == sorted(names), name


# -- config.env and the ConfigMap -------------------------------------------------------------

def test_config_env_copy_matches_the_repository() -> None:
    assert CONFIG_ENV_COPY.read_bytes() == CONFIG_ENV.read_bytes(), (
        f"{CONFIG_ENV_COPY.relative_to(ROOT)} differs from config.env (kustomize reads only "
        "files under its directory): cp config.env deploy/k8s/base/config/config.env")


def test_configmap_holds_config_env_as_unistack_reads_it() -> None:
    expected = {item.key: item.value for item in envfile.read(CONFIG_ENV_COPY)}
    assert configmap("base") == expected, (
        "kustomize's reading of config.env differs from unistack.envfile's (a quoted value "
        "or an inline comment?)")


def test_scale_out_configmap_changes_only_the_topology() -> None:
    base, scaled = configmap("base"), configmap("scale-out")
    unknown = sorted(set(scaled) - KEYS_BY_NAME.keys())
    assert not unknown, f"not unistack keys: {unknown}"
    changed = {key for key in scaled if scaled[key] != base.get(key)}
    assert changed == SCALE_OUT_KEYS, changed
    assert set(base) <= set(scaled)


def test_no_secret_in_a_configmap_or_a_variable() -> None:
    for name in ALL:
        leaked = [key for key in SECRET_KEYS if configmap(name).get(key)]
        assert not leaked, f"{name}: secrets in the ConfigMap: {leaked}"
        for workload in workloads(name):
            names = {item["name"] for item in container(workload).get("env", [])}
            assert not names & set(SECRET_KEYS), \
                f"{workload['metadata']['name']}: a secret as a variable (use <KEY>_FILE)"
    for variant, service in compose_variants().items():
        environment = service.get("environment", {})
        assert not set(environment) & set(SECRET_KEYS), f"compose {variant}: secret variable"


# -- ports -------------------------------------------------------------------------------------

def registry_ports(tmp_path: Path) -> dict[str, int]:
    settings = config_settings(tmp_path)
    return {spec.name: spec.port(settings) for spec in REGISTRY}


def test_config_env_ports_are_the_documented_defaults() -> None:
    values = {item.key: item.value for item in envfile.read(CONFIG_ENV)}
    assert set(PORT_KEYS) <= values.keys(), "config.env lacks a port key"
    assert {k: values[k] for k in PORT_KEYS} == {k: KEYS_BY_NAME[k].default for k in PORT_KEYS}


def test_dockerfile_exposes_every_service_port(tmp_path: Path) -> None:
    ports = sorted(registry_ports(tmp_path).values())
    for target in ("cpu", "gpu"):
        assert sorted(dockerfile_target(target).expose) == ports, f"EXPOSE of target {target}"


def test_compose_publishes_every_port_on_loopback_only(tmp_path: Path) -> None:
    ports = set(registry_ports(tmp_path).values())
    for variant, service in compose_variants().items():
        published = {}
        for entry in service["ports"]:
            assert isinstance(entry, str), f"compose {variant}: long-form port {entry!r}"
            address, _host, inside = interpolate(entry).split(":")
            assert address == "127.0.0.1", f"compose {variant}: {entry} is not on 127.0.0.1"
            published[int(inside)] = entry
        assert set(published) == ports, f"compose {variant}: container ports {published}"


def test_base_pod_lists_every_service_port(tmp_path: Path) -> None:
    ports = registry_ports(tmp_path)
    (stack,) = workloads("base")
    assert container_ports(stack) == {port_name(s): p for s, p in ports.items()}


def test_each_scale_out_pod_lists_its_own_port(tmp_path: Path) -> None:
    ports = registry_ports(tmp_path)
    for service, port in ports.items():
        workload = workload_of("scale-out", service)
        assert container_ports(workload) == {port_name(service): port}, service


def test_service_ports_are_the_configured_ports(tmp_path: Path) -> None:
    """A client connects to <SERVICE>_HOST:<SERVICE>_PORT: the Service's port must be the
    configured port and lead to the container's port of that number."""
    ports = registry_ports(tmp_path)
    by_number = {port: service for service, port in ports.items()}
    for name in ALL:
        for svc in kinds(name, "Service"):
            (workload,) = [w for w in workloads(name) if _selects(svc, w)]
            for entry in svc["spec"]["ports"]:
                target = resolve_port(workload, entry.get("targetPort", entry["port"]))
                assert entry["port"] == target, f"{name}: Service {svc['metadata']['name']}"
                assert entry["port"] in by_number, f"{entry['port']} is no service's port"
                assert entry["name"] == port_name(by_number[entry["port"]])


def _selects(svc: dict[str, Any], workload: dict[str, Any]) -> bool:
    labels = workload["spec"]["template"]["metadata"]["labels"]
    selector = svc["spec"]["selector"]
    return all(labels.get(key) == value for key, value in selector.items())


def test_supervisord_programs_are_the_registry() -> None:
    sections = supervisord_sections()
    programs = {s.split(":", 1)[1] for s in sections if s.startswith("program:")}
    assert programs == set(SERVICES)
    for section, options in sections.items():
        used = set(re.findall(r"%\(ENV_([A-Z_]+_PORT)\)s", options["command"]))
        assert used <= set(PORT_KEYS), f"[{section}] uses unknown port variables {used}"
        own = SERVICES.get(section.split(":", 1)[1])
        assert not used or (own and used == {own.port_key}), \
            f"[{section}] listens on another service's port: {used}"


# -- probes --------------------------------------------------------------------------------

def _probes(workload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    spec = container(workload)
    return {kind: spec[f"{kind}Probe"] for kind in ("startup", "readiness", "liveness")
            if f"{kind}Probe" in spec}


def _hub_api_paths() -> set[str]:
    return set(re.findall(r'path == "(/[a-z/-]*)"', HUB_API.read_text()))


def test_base_probes_ask_the_hub(tmp_path: Path) -> None:
    hub_port = registry_ports(tmp_path)["hub"]
    (stack,) = workloads("base")
    probes = _probes(stack)
    assert set(probes) == {"startup", "readiness", "liveness"}
    paths = {}
    for kind, probe in probes.items():
        assert resolve_port(stack, probe["httpGet"]["port"]) == hub_port, kind
        paths[kind] = probe["httpGet"]["path"]
    # Liveness (and startup) = the hub's loop is alive; readiness = the stack is ready.
    assert paths == {"startup": SERVICES["hub"].liveness.path, "readiness": "/ready",
                     "liveness": SERVICES["hub"].liveness.path}
    assert set(paths.values()) <= _hub_api_paths(), "a probe path the hub does not serve"


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_scale_out_probes_are_the_registrys(service: str, tmp_path: Path) -> None:
    spec = SERVICES[service]
    port = registry_ports(tmp_path)[service]
    workload = workload_of("scale-out", service)
    probes = _probes(workload)
    assert set(probes) == {"startup", "readiness", "liveness"}
    expected = {"startup": spec.liveness, "liveness": spec.liveness,
                "readiness": spec.readiness}
    for kind, probe in probes.items():
        if expected[kind].kind == "http":
            assert probe["httpGet"]["path"] == expected[kind].path, kind
            assert resolve_port(workload, probe["httpGet"]["port"]) == port, kind
        elif "tcpSocket" in probe:
            assert resolve_port(workload, probe["tcpSocket"]["port"]) == port, kind
        else:  # an exec probe, e.g. redis-cli PING with the password file
            command = " ".join(probe["exec"]["command"])
            assert f"${spec.port_key}" in command or str(port) in command, command
    if service == "hub":
        assert {p["httpGet"]["path"] for p in probes.values()} <= _hub_api_paths()


def test_compose_healthcheck_is_the_images(tmp_path: Path) -> None:
    for target in ("cpu", "gpu"):
        command = dockerfile_target(target).healthcheck
        assert command[:3] == [dockerfile_target(target).entrypoint[0], "-m", "unistack"]
        _parses(command[3:], f"HEALTHCHECK of {target}")
    for variant, service in compose_variants().items():
        check = service.get("healthcheck")
        if check:  # unset: the image's HEALTHCHECK
            assert check["test"] == ["CMD", *dockerfile_target("gpu").healthcheck], variant
            assert not check.get("disable"), variant


# -- who reaches whom ----------------------------------------------------------------------------

def test_scale_out_hosts_are_the_service_names() -> None:
    data = configmap("scale-out")
    services = {svc["metadata"]["name"]: svc for svc in kinds("scale-out", "Service")}
    for prefix in SERVICE_PREFIXES:
        host = data[f"{prefix}_HOST"]
        assert host in services, f"{prefix}_HOST={host} names no Service ({sorted(services)})"
        workload = workload_of("scale-out", prefix.lower())
        assert _selects(services[host], workload), \
            f"Service {host} does not select the pods of {workload['metadata']['name']}"
        ports = [p["port"] for p in services[host]["spec"]["ports"]]
        assert int(data[f"{prefix}_PORT"]) in ports, f"Service {host} lacks {prefix}_PORT"
        # The hub must reach a service that is not ready to say why; not so the engine's
        # replicas, where it would land on ready and unready ones by turns.
        published = services[host]["spec"].get("publishNotReadyAddresses", False)
        replicas = workload["spec"]["replicas"]
        assert published == (replicas == 1), f"Service {host}: publishNotReadyAddresses"


def test_base_reaches_every_service_on_loopback() -> None:
    data = configmap("base")
    assert all(data.get(f"{p}_HOST", "127.0.0.1") == "127.0.0.1" for p in SERVICE_PREFIXES)


@pytest.mark.parametrize("item", EVERY_WORKLOAD)
def test_effective_settings_load(item: str, tmp_path: Path) -> None:
    """The configuration each container ends up with is valid, in the intended mode."""
    name, workload = workload_named(item)
    environ = effective_env(name, workload)
    settings = settings_in(environ, tmp_path)
    gpu = "nvidia.com/gpu" in container(workload)["resources"].get("limits", {})
    assert settings.unistack_bind_address == "0.0.0.0"  # probed from the kubelet
    assert settings.ml_require_gpu == ("1" if gpu else "0")
    assert image_target(workload) == ("gpu" if gpu else "cpu")
    if name == "base":
        assert settings.unistack_mode == "docker"  # the hub restarts inside the pod
        assert {settings.host(k) for k in PORT_KEYS} == {"127.0.0.1"}
    else:
        assert settings.unistack_mode == "kubernetes"  # the kubelet restarts pods
        assert settings.host("REDIS_PORT") == "unistack-redis"
    if runs(workload) == "ml_engine":
        assert settings.ml_engine_consumer == POD_NAME  # one consumer per replica


def test_gpu_is_requested_where_the_engine_runs() -> None:
    for _name, workload in every_workload():
        resources = container(workload)["resources"]
        serves = runs(workload) in (None, "ml_engine")
        limits, requests = resources.get("limits", {}), resources.get("requests", {})
        assert (limits.get("nvidia.com/gpu") == 1) == serves, workload["metadata"]["name"]
        assert requests.get("nvidia.com/gpu") == limits.get("nvidia.com/gpu")
    engine = workload_of("scale-out", "ml_engine")
    assert engine["kind"] == "Deployment" and engine["spec"]["replicas"] > 1


# -- secrets ---------------------------------------------------------------------------------

@pytest.mark.parametrize("item", EVERY_WORKLOAD)
def test_secrets_come_from_the_secret_as_files(item: str) -> None:
    _name, workload = workload_named(item)
    spec = workload["spec"]["template"]["spec"]
    secret_volumes = {v["name"]: v["secret"] for v in spec["volumes"] if "secret" in v}
    mounts = {m["mountPath"]: m for m in container(workload)["volumeMounts"]
              if m["name"] in secret_volumes}
    env = explicit_env(workload)
    files = {key: env[f"{key}_FILE"] for key in SECRET_KEYS if f"{key}_FILE" in env}
    needed = set(SECRET_KEYS) if runs(workload) in (None, "hub") else set(GENERATED_KEYS)
    assert set(files) == needed, f"{workload['metadata']['name']}: {sorted(files)}"
    for key, path in files.items():
        directory, _, filename = path.rpartition("/")
        assert directory in mounts, f"{key}_FILE={path}: no secret volume at {directory}"
        assert mounts[directory].get("readOnly") is True
        volume = secret_volumes[mounts[directory]["name"]]
        assert volume["secretName"] == "unistack-secrets"
        items = {i["path"]: i["key"] for i in volume.get("items", [])}
        assert items.get(filename, filename) == key if items else filename == key, path
        assert not items or filename in items, f"{key}: not among the volume's items"


def test_compose_secrets_are_files() -> None:
    for variant, service in compose_variants().items():
        environment = service.get("environment", {})
        listed = set(service.get("secrets", []))
        files = {k[:-5]: v for k, v in environment.items() if k.endswith("_FILE")}
        assert set(files) <= set(SECRET_KEYS), f"compose {variant}: {files}"
        assert set(GENERATED_KEYS) <= set(files), f"compose {variant}: {files}"
        for key, path in files.items():
            directory, _, secret = path.rpartition("/")
            assert directory == "/run/secrets" and secret in listed, f"{key}_FILE={path}"


# -- paths and volumes ---------------------------------------------------------------------------

def _image_owned_dirs() -> set[str]:
    """Directories the runtime stage creates owned by the runtime user (install -d -o)."""
    owned = set()
    for instruction, rest in dockerfile_stages()["runtime"].instructions:
        if instruction == "RUN" and "install -d" in rest:
            owned |= {word for word in rest.split() if word.startswith("/")}
    return owned


def test_compose_volumes_are_the_images_mount_points() -> None:
    owned = _image_owned_dirs()
    assert home() in owned
    for variant, service in compose_variants().items():
        assert service["environment"]["UNISTACK_HOME"] == home(), variant
        targets = [str(v).split(":")[1] if isinstance(v, str) else v["target"]
                   for v in service["volumes"]]
        assert home() in targets, f"compose {variant}: no volume at {home()}"
        stray = [t for t in targets if t not in owned]
        assert not stray, (f"compose {variant}: volumes at {stray}, which the image does "
                           "not create owned by its user (a new volume takes their owner)")
        assert {"/tmp", "/run"} <= {t.split(":")[0] for t in service.get("tmpfs", [])}


@pytest.mark.parametrize("item", EVERY_WORKLOAD)
def test_pod_mounts_the_home_and_scratch(item: str, tmp_path: Path) -> None:
    _name, workload = workload_named(item)
    spec = workload["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    claims = {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}
    mounts = {m["mountPath"]: m["name"] for m in container(workload)["volumeMounts"]}
    assert explicit_env(workload)["UNISTACK_HOME"] == home()
    assert home() in mounts, f"nothing mounted at UNISTACK_HOME {home()}"
    assert mounts[home()] in claims or mounts[home()] in volumes
    for scratch in ("/tmp", "/run"):  # the root filesystem is read-only
        assert "emptyDir" in volumes[mounts[scratch]], scratch
    image_home = dockerfile_target(image_target(workload)).env["HOME"]
    assert image_home in mounts, f"HOME={image_home} is not writable"
    models = config_settings(tmp_path).models_dir.relative_to(tmp_path)
    for path, volume in mounts.items():
        if path.startswith(home() + "/"):
            assert path == f"{home()}/{models}", f"{path}: only var/models is shared"
            assert volumes[volume]["persistentVolumeClaim"]["claimName"] == "unistack-models"


# -- commands ----------------------------------------------------------------------------------

def _parses(argv: list[str], where: str) -> None:
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            build_parser().parse_args(argv)
    except SystemExit:
        error = stderr.getvalue().strip().splitlines()[-1]
    else:
        return
    pytest.fail(f"{where}: `unistack {' '.join(argv)}` is no command of the image's CLI: "
                f"{error}")


def test_containers_run_the_images_cli() -> None:
    python = dockerfile_target("gpu").entrypoint[0]
    (stack,) = workloads("base")
    gpu = dockerfile_target("gpu")
    assert container(stack)["command"] == gpu.entrypoint + gpu.cmd  # the image's own start
    assert gpu.cmd == ["start", "--foreground"]
    for name, workload in every_workload():
        command = container(workload)["command"]
        assert command[:3] == [python, "-m", "unistack"], command
        _parses(command[3:], f"{name}: {workload['metadata']['name']}")
    ran = sorted(str(runs(w)) for w in workloads("scale-out"))
    assert ran == sorted(SERVICES), f"scale-out: every service once, not {ran}"


def test_images_are_dockerfile_targets() -> None:
    stages = dockerfile_stages()
    for _name, workload in every_workload():
        assert image_target(workload) in stages, container(workload)["image"]
    for variant, service in compose_variants().items():
        tag = interpolate(service["image"]).rsplit(":", 1)[1]
        assert service["build"]["target"] == tag and tag in stages, variant
        assert service["build"]["dockerfile"] == DOCKERFILE.name


# -- stopping ----------------------------------------------------------------------------------

def test_stop_budget_fits_every_grace_period() -> None:
    budget = stop_budget()
    for variant, service in compose_variants().items():
        grace = parse_duration(service["stop_grace_period"])
        assert budget < grace, f"compose {variant}: stop_grace_period {grace} s <= {budget} s"
    (stack,) = workloads("base")
    grace = stack["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert budget < grace, f"base: terminationGracePeriodSeconds {grace} <= {budget} s"
    sections = supervisord_sections()
    for workload in workloads("scale-out"):
        own = int(sections[f"program:{runs(workload)}"]["stopwaitsecs"])
        grace = workload["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert own < grace, workload["metadata"]["name"]


def test_the_dashboard_has_time_for_gunicorns_graceful_stop_and_supervisords_poll() -> None:
    # gunicorn SIGKILLs a worker still busy after graceful_timeout, then exits; supervisord
    # in the foreground notices the exit only at its next 1 s poll. With 2 s a container's
    # stop on CI SIGKILLed the dashboard.
    own = int(supervisord_sections()["program:dashboard"]["stopwaitsecs"])
    assert own >= GRACEFUL_TIMEOUT + 2, f"dashboard stopwaitsecs {own} s"


# -- running as the image's user, locked down ------------------------------------------------------

def _image_user() -> tuple[int, int]:
    users = {dockerfile_target(t).user for t in ("cpu", "gpu")}
    assert len(users) == 1, f"the targets end on different users: {users}"
    uid, _, gid = users.pop().partition(":")
    assert uid.isdigit() and gid.isdigit(), "USER must be numeric (runAsNonRoot checks it)"
    return int(uid), int(gid)


@pytest.mark.parametrize("item", EVERY_WORKLOAD)
def test_pod_runs_locked_down_as_the_image_user(item: str) -> None:
    _name, workload = workload_named(item)
    uid, gid = _image_user()
    pod = workload["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"],
            pod["securityContext"]["fsGroup"]) == (uid, gid, gid)
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    # No service links: they would set REDIS_PORT=tcp://... over unistack's own keys.
    assert pod["enableServiceLinks"] is False
    assert pod["automountServiceAccountToken"] is False
    context = container(workload)["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context.get("runAsUser", uid) == uid


def test_compose_runs_locked_down_as_the_image_user() -> None:
    uid, gid = _image_user()
    for variant, service in compose_variants().items():
        assert service["user"] == f"{uid}:{gid}", variant
        assert service["read_only"] is True, variant
        assert service["cap_drop"] == ["ALL"], variant
        assert "no-new-privileges:true" in service["security_opt"], variant


# -- metrics ---------------------------------------------------------------------------------

def test_scrape_annotations_point_at_metrics(tmp_path: Path) -> None:
    ports = registry_ports(tmp_path)
    for name, workload in every_workload():
        annotations = workload["spec"]["template"]["metadata"].get("annotations", {})
        service = runs(workload)
        if service and SERVICES[service].metrics_path:
            assert annotations.get("prometheus.io/scrape") == "true", service
        if annotations.get("prometheus.io/scrape") != "true":
            continue
        port = int(annotations["prometheus.io/port"])
        owner = next(s for s, p in ports.items() if p == port)
        assert port in container_ports(workload).values(), f"{name}: {port} not exposed"
        assert annotations["prometheus.io/path"] == SERVICES[owner].metrics_path, owner
