"""The ML engine inside the whole stack: operator commands, Redis restarted under it,
a new model version swapped in under load."""

from __future__ import annotations

import json
import time
import urllib.request

import numpy as np
import pytest
import redis

from harness.stacks import Stack
from harness.waiting import wait_for
from tests.chaos.ml_load import RequestLoad
from tests.chaos.test_chaos import FAULT_TRIALS, services, start
from unistack.config import load_settings
from unistack.ml.client import MLClient, PredictionTimeout, Unavailable

pytestmark = pytest.mark.chaos
ROW = "[[0.001, 0.002, -0.01, 0.01, 55.0, 0.0002, 0.0001, 0.3]]"


def engine_models(stack: Stack) -> dict:  # type: ignore[type-arg]
    url = f"http://127.0.0.1:{stack.port('ML_ENGINE_PORT')}/ready"
    with urllib.request.urlopen(url, timeout=3) as response:
        return dict(json.load(response)["models"])


def test_ml_predict_from_the_command_line(stack: Stack) -> None:
    start(stack)
    done = stack.cli("ml", "predict", "--rows", ROW)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert len(answer["predictions"]) == 1 and 0.0 <= answer["predictions"][0] <= 1.0
    wrong = stack.cli("ml", "predict", "--rows", "[[1, 2]]")
    assert wrong.returncode == 1 and "2 features per row, but model 'default' expects 8" \
        in wrong.stderr
    broken = stack.cli("ml", "predict", "--rows", "[[1,")
    assert broken.returncode == 1 and "--rows is not JSON" in broken.stderr
    missing = stack.cli("ml", "predict", "--model", "ghost", "--rows", ROW)
    assert missing.returncode == 1 and "unknown model 'ghost'" in missing.stderr
    url = f"http://127.0.0.1:{stack.port('ML_ENGINE_PORT')}/metrics"
    with urllib.request.urlopen(url, timeout=3) as response:
        metrics = response.read().decode()
    assert 'ml_engine_requests_total{outcome="ok"} 1.0' in metrics
    assert 'ml_engine_request_duration_seconds_bucket{le="+Inf"} 3.0' in metrics
    assert 'ml_engine_model_version{device="cpu",kind="xgboost",model="default"} 1.0' in metrics


def test_redis_restarted_under_a_blocked_engine_is_survived(stack: Stack) -> None:
    start(stack, **FAULT_TRIALS)
    engine_pid = services(stack)["ml_engine"]["pid"]
    client = MLClient(load_settings(environ=stack.env))
    assert client.predict(np.zeros((1, 8)), timeout=5).shape == (1,)
    assert stack.cli("restart", "redis").returncode == 0

    def predicts() -> bool:
        try:
            return client.predict(np.zeros((1, 8)), timeout=2).shape == (1,)
        except Unavailable:  # Redis not back yet
            return False

    wait_for(predicts, timeout=20, interval=0.2)
    assert services(stack)["ml_engine"]["pid"] == engine_pid  # reconnected, not restarted


def test_a_new_model_version_is_swapped_in_under_load_without_a_failed_request(
    stack: Stack,
) -> None:
    start(stack, ML_MODEL_REFRESH_INTERVAL="0.5")
    with RequestLoad(load_settings(environ=stack.env), producers=3, rows=4,
                     timeout=10) as load:
        wait_for(lambda: load.answered > 200, timeout=20)
        trained = stack.cli("ml", "train", "--synthetic", "3000", "--rounds", "20", "--seed", "7")
        assert trained.returncode == 0, trained.stderr
        wait_for(lambda: engine_models(stack)["default"]["version"] == 2, timeout=20)
        swapped = load.answered
        wait_for(lambda: load.answered > swapped + 200, timeout=20)
    assert load.failures == []


def test_flushall_under_load_is_survived_without_a_crash(stack: Stack) -> None:
    """An operator's FLUSHALL deletes the request stream and its group under the engine."""
    start(stack, **FAULT_TRIALS)
    engine_pid = services(stack)["ml_engine"]["pid"]
    settings = load_settings(environ=stack.env)
    raw = redis.Redis(port=settings.redis_port, password=settings.redis_password)
    with RequestLoad(settings, producers=3, rows=4, timeout=2) as load:
        wait_for(lambda: load.answered > 200, timeout=20)
        raw.flushall()
        flushed = load.answered
        wait_for(lambda: load.answered > flushed + 200, timeout=20)  # serving again
    assert services(stack)["ml_engine"]["pid"] == engine_pid  # no crash, no restart
    assert all(isinstance(f, PredictionTimeout) and "was lost: the request stream was reset"
               in str(f) for f in load.failures), load.failures
    [reset] = engine_events(stack, "request_stream_reset")
    assert "recreated it" in reset
    kinds = [e["kind"] for e in hub_events(stack) if e["service"] == "ml_engine"]
    assert "crashed" not in kinds and "hung" not in kinds


def engine_events(stack: Stack, kind: str) -> list[str]:
    """Details of the engine's own events of KIND, from its log."""
    log = (stack.home / "var/log/ml_engine.log").read_text()
    return [line for line in log.splitlines() if kind in line]


def hub_events(stack: Stack) -> list[dict]:  # type: ignore[type-arg]
    url = f"http://127.0.0.1:{stack.port('HUB_PORT')}/events"
    with urllib.request.urlopen(url, timeout=3) as response:
        return list(json.load(response)["events"])


def test_a_corrupt_model_is_degraded_with_the_fix_and_never_restart_looped(stack: Stack) -> None:
    start(stack, **FAULT_TRIALS, SERVICE_READY_TIMEOUT="2", START_TIMEOUT="6")
    assert stack.cli("stop").returncode == 0
    [model] = (stack.home / "var/models/default/1").glob("*.ubj")
    model.write_bytes(model.read_bytes() + b"!")  # the metadata's sha256 no longer matches
    listed = stack.cli("ml", "models")
    assert listed.returncode == 1 and "CORRUPT" in listed.stdout
    assert "model default v1 failed its checksum" in listed.stdout
    started = stack.cli("start")
    assert started.returncode == 1
    assert "model default v1 failed its checksum" in started.stderr
    engine = services(stack)["ml_engine"]
    assert engine["state"] == "DEGRADED" and "ml train" in engine["detail"]
    wait_for(lambda: services(stack)["ml_engine"]["pid"], timeout=5)
    pid = services(stack)["ml_engine"]["pid"]
    time.sleep(3)  # past SERVICE_READY_TIMEOUT: a hung verdict would have killed it by now
    assert services(stack)["ml_engine"]["pid"] == pid
    kinds = [e["kind"] for e in hub_events(stack) if e["service"] == "ml_engine"]
    assert "degraded" in kinds and "hung" not in kinds and "looping" not in kinds
    trained = stack.cli("ml", "train", "--synthetic", "3000", "--rounds", "10")
    assert trained.returncode == 0, trained.stderr
    wait_for(lambda: services(stack)["ml_engine"]["ready"], timeout=20)
    assert services(stack)["ml_engine"]["pid"] == pid


def test_redis_restarted_with_a_slow_load_under_the_engine_restarts_no_engine(
    stack: Stack,
) -> None:
    """The engine backs off while Redis loads its dataset: waiting, not hung."""
    start(stack, **FAULT_TRIALS)
    settings = load_settings(environ=stack.env)
    raw = redis.Redis(port=settings.redis_port, password=settings.redis_password,
                      socket_timeout=30)
    # A dataset that takes seconds to load, written in short MSETs: long Lua bursts would
    # make Redis busy here, a different fault (test_redis_faults.py) with a race of its own.
    for first in range(0, 2_000_000, 50_000):
        raw.mset({f"bulk:{i}": i for i in range(first, first + 50_000)})
    engine_pid = services(stack)["ml_engine"]["pid"]
    assert stack.cli("restart", "redis", timeout=120).returncode == 0
    client = MLClient(settings)
    wait_for(lambda: services(stack)["ml_engine"]["ready"], timeout=30)
    assert client.predict(np.zeros((1, 8)), timeout=5).shape == (1,)
    assert services(stack)["ml_engine"]["pid"] == engine_pid
    kinds = [e["kind"] for e in hub_events(stack) if e["service"] == "ml_engine"]
    assert "hung" not in kinds and "looping" not in kinds and "crashed" not in kinds, [
        (e["kind"], e["detail"]) for e in hub_events(stack) if e["service"] == "ml_engine"]
    assert raw.dbsize() >= 2_000_000


def test_redis_restarted_empty_under_load_is_survived(stack: Stack) -> None:
    """A restore that replaces Redis's data with an empty dataset, under request load."""
    start(stack, **FAULT_TRIALS)
    engine_pid = services(stack)["ml_engine"]["pid"]
    settings = load_settings(environ=stack.env)
    with RequestLoad(settings, producers=2, rows=4, timeout=2) as load:
        wait_for(lambda: load.answered > 100, timeout=20)
        # the data replaced by an empty dataset, then Redis restarted on it
        redis.Redis(port=settings.redis_port, password=settings.redis_password).flushall()
        assert stack.cli("restart", "redis").returncode == 0
        answered = load.answered
        wait_for(lambda: load.answered > answered + 100, timeout=30)
    assert services(stack)["ml_engine"]["pid"] == engine_pid
    lost = [f for f in load.failures if not isinstance(f, PredictionTimeout | Unavailable)]
    assert lost == [], lost
