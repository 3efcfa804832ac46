"""The ml_engine program (`python -m unistack.ml.server`) against a real redis-server:
a corrupt model is refused with the fix, Redis down is waiting (alive, not ready), and
Redis restarted on an empty dataset under load is survived without a crash."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from harness.stacks import stack_environment
from harness.waiting import wait_for
from tests.chaos.ml_load import RequestLoad
from unistack.config import load_settings
from unistack.ml.client import MLClient, PredictionTimeout, Unavailable
from unistack.ml.market import synthetic_bars
from unistack.ml.registry import ModelRegistry, ModelVersion
from unistack.ml.training import train_and_register

PASSWORD = "p" * 43


class Parts:
    """A redis-server and an ml_engine on free loopback ports under one temp home."""

    def __init__(self, home: Path) -> None:
        self.env = stack_environment(home) | {"REDIS_PASSWORD": PASSWORD}
        self.settings = load_settings(environ=self.env)
        self.registry = ModelRegistry(self.settings.models_dir)
        self.redis_dir = home / "redis"
        self.redis_dir.mkdir()
        self.log_file = home / "ml_engine.log"
        self.children: dict[str, subprocess.Popen[bytes]] = {}

    def start_redis(self) -> None:
        self.children["redis"] = subprocess.Popen(
            ["redis-server", "--port", str(self.settings.redis_port), "--bind", "127.0.0.1",
             "--dir", str(self.redis_dir), "--requirepass", PASSWORD, "--appendonly", "no"],
            stdout=subprocess.DEVNULL)
        client = self.redis()
        wait_for(lambda: _answers(client))

    def stop_redis(self) -> None:
        self.children["redis"].terminate()  # SIGTERM: Redis saves its dataset, then exits
        self.children["redis"].wait(10)

    def start_engine(self) -> subprocess.Popen[bytes]:
        with self.log_file.open("ab") as log:  # the engine logs to stdout
            self.children["engine"] = subprocess.Popen(
                [sys.executable, "-m", "unistack.ml.server"], env=self.env, stdout=log)
        return self.children["engine"]

    def redis(self) -> redis.Redis:
        return redis.Redis(port=self.settings.redis_port, password=PASSWORD)

    def get(self, path: str) -> tuple[int, dict[str, Any]]:
        url = f"http://127.0.0.1:{self.settings.ml_engine_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                return response.status, dict(json.load(response))
        except urllib.error.HTTPError as error:
            return error.code, dict(json.loads(error.read()))
        except OSError:
            return 0, {}

    def log(self) -> str:
        return self.log_file.read_text()

    def stop(self) -> None:
        for child in self.children.values():
            child.kill()
            child.wait(10)


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[Parts]:
    running = Parts(tmp_path)
    running.start_redis()
    yield running
    running.stop()


def train(parts: Parts) -> ModelVersion:
    return train_and_register(parts.registry, "default", synthetic_bars(1500), "synthetic",
                              rounds=5)


def corrupt(version: ModelVersion) -> bytes:
    """Append a byte to VERSION's model file (its checksum no longer matches); the good
    bytes, to restore them."""
    good = version.model_file.read_bytes()
    version.model_file.write_bytes(good + b"!")
    return good


def test_a_corrupt_newest_version_is_refused_and_the_older_one_serves(parts: Parts) -> None:
    train(parts)
    corrupt(train(parts))
    parts.start_engine()
    wait_for(lambda: parts.get("/ready")[0] == 200, timeout=30)
    assert parts.get("/ready")[1]["models"]["default"]["version"] == 1
    assert MLClient(parts.settings).predict(np.zeros((1, 8)), timeout=5).shape == (1,)
    assert "model default v2 failed its checksum" in parts.log()


def test_with_only_a_corrupt_version_the_engine_is_alive_not_ready_with_the_fix(
    parts: Parts,
) -> None:
    good = corrupt(only := train(parts))
    engine = parts.start_engine()
    wait_for(lambda: parts.get("/ready")[0] == 503, timeout=30)
    code, body = parts.get("/ready")
    assert code == 503 and body["ready"] is False and body["restart_helps"] is False
    assert body["detail"].startswith("model default v1 failed its checksum")
    assert "ml train" in body["detail"] and "restore var/models from a backup" in body["detail"]
    assert len(json.dumps(body)) < 2048
    assert parts.get("/health")[0] == 200 and engine.poll() is None
    only.model_file.write_bytes(good)  # restored from a backup: served without a restart
    wait_for(lambda: parts.get("/ready")[0] == 200, timeout=15)
    assert engine.poll() is None


def test_redis_down_under_the_engine_is_waiting_alive_and_not_ready(parts: Parts) -> None:
    train(parts)
    engine = parts.start_engine()
    wait_for(lambda: parts.get("/ready")[0] == 200, timeout=30)
    parts.stop_redis()
    wait_for(lambda: "waiting for redis" in parts.get("/health")[1].get("waiting", ""))
    deadline = time.monotonic() + 7  # past the 2 s staleness and the 5 s backoff cap
    while time.monotonic() < deadline:
        code, health = parts.get("/health")
        assert code == 200 and health["alive"], health
        code, ready = parts.get("/ready")
        assert code == 503 and ready["restart_helps"] is True, ready
        assert ready["detail"].startswith("waiting for redis"), ready
        time.sleep(0.2)  # a probe's pace, not a wait for a condition
    parts.start_redis()
    wait_for(lambda: parts.get("/ready")[0] == 200, timeout=15)
    assert MLClient(parts.settings).predict(np.zeros((1, 8)), timeout=5).shape == (1,)
    assert engine.poll() is None


def test_redis_restarted_on_an_empty_dataset_under_load_is_survived(parts: Parts) -> None:
    train(parts)
    engine = parts.start_engine()
    wait_for(lambda: parts.get("/ready")[0] == 200, timeout=30)
    with RequestLoad(parts.settings, producers=2, rows=4, timeout=2) as load:
        wait_for(lambda: load.answered > 100, timeout=20)
        parts.stop_redis()
        for data in parts.redis_dir.iterdir():  # the dataset is gone: Redis starts empty
            data.unlink()
        parts.start_redis()
        restarted = load.answered
        wait_for(lambda: load.answered > restarted + 100, timeout=30)  # serving again
    assert engine.poll() is None  # no crash
    assert parts.redis().exists("ml:stream-reset")  # the engine marked the reset
    unclear = [f for f in load.failures if not _clear(f)]
    assert unclear == [], unclear
    assert parts.log().count("request_stream_reset") == 1


def _clear(failure: BaseException) -> bool:
    """A failure that says what happened: Redis unreachable, or the request lost in the
    reset (or no engine answered in time)."""
    text = str(failure)
    if isinstance(failure, Unavailable):
        return "cannot be reached" in text
    return isinstance(failure, PredictionTimeout) and (
        "the request stream was reset" in text or "is the ml_engine running" in text)


def test_a_starting_engine_is_loading_until_it_has_looked_then_says_none_is_there(
    parts: Parts,
) -> None:
    parts.start_engine()  # no model registered at all
    answers = []
    while not answers or answers[-1][1].get("restart_helps") is not False:
        code, body = parts.get("/ready")
        if code:
            answers.append((code, body))
        assert len(answers) < 3000, answers[-3:]
    for code, body in answers[:-1]:  # before it read the registry: starting, not broken
        assert code == 503 and body["restart_helps"] is True, body
        assert body["detail"].startswith(("loading the models", "canary")), body
    assert answers[-1][1]["detail"].startswith("no model loaded from"), answers[-1]
