"""The engine's worker loop against a real redis-server: exact predictions, every bad
input answered with its reason, expiry, dead letters, a redis-cli JSON request."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import xgboost as xgb

from harness.fetch import Labels, metric_samples
from harness.ports import free_ports
from harness.waiting import wait_for
from unistack.config import load_settings
from unistack.ml import protocol
from unistack.ml.client import (
    BacklogFull,
    Expired,
    Invalid,
    MLClient,
    PredictionTimeout,
    Refused,
)
from unistack.ml.engine import Engine
from unistack.ml.features import features_and_labels
from unistack.ml.keys import DEAD_LETTERS, GROUP, STREAM
from unistack.ml.market import synthetic_bars
from unistack.ml.metrics import EngineMetrics
from unistack.ml.models import ModelStore, on_cpu
from unistack.ml.registry import ModelRegistry
from unistack.ml.server import engine_config
from unistack.ml.training import train_and_register

PASSWORD = "p" * 43


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[redis.Redis]:
    port = free_ports(1)[0]
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path), "--requirepass", PASSWORD],
        stdout=subprocess.DEVNULL)
    client = redis.Redis(port=port, password=PASSWORD)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    wait_for(answers)
    yield client
    process.kill()
    process.wait()


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    models = ModelRegistry(tmp_path / "models")
    train_and_register(models, "default", synthetic_bars(3000), "synthetic", rounds=20)
    return models


class Running:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self.run)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.engine.step()
            except Exception as exc:  # the test asserts none happened
                self.errors.append(exc)


def idle_engine(server: redis.Redis, registry: ModelRegistry, tmp_path: Path) -> Engine:
    """An engine whose steps the test takes itself."""
    store = ModelStore(registry, on_cpu)
    store.refresh()
    settings = load_settings(environ={"UNISTACK_HOME": str(tmp_path)})
    worker = Engine(server, store, engine_config(settings, "engine-1")._replace(
        block_ms=20, claim_idle_ms=100, claim_every_s=0.05))
    worker.ensure_group()
    return worker


@pytest.fixture
def engine(redis_server: redis.Redis, registry: ModelRegistry, tmp_path: Path
           ) -> Iterator[Running]:
    running = Running(idle_engine(redis_server, registry, tmp_path))
    running.thread.start()
    yield running
    running.stop.set()
    running.thread.join(5)
    assert running.errors == []


def client_for(server: redis.Redis, tmp_path: Path, **options: Any) -> MLClient:
    port = server.connection_pool.connection_kwargs["port"]
    settings = load_settings(environ={"UNISTACK_HOME": str(tmp_path), "REDIS_PORT": str(port),
                                      "REDIS_PASSWORD": PASSWORD})
    return MLClient(settings, **options)


def test_predictions_equal_in_process_predictions_exactly(
    engine: Running, redis_server: redis.Redis, registry: ModelRegistry, tmp_path: Path
) -> None:
    x, _ = features_and_labels(synthetic_bars(500, seed=9))
    booster = xgb.Booster(model_file=str(registry.get("default").model_file))
    expected = booster.inplace_predict(x)
    client = client_for(redis_server, tmp_path)
    np.testing.assert_array_equal(client.predict(x, timeout=5), expected)
    single = np.concatenate([client.predict(row, timeout=5) for row in x[:20]])
    np.testing.assert_array_equal(single, expected[:20])
    assert redis_server.xlen(STREAM) == 0  # answered entries leave the stream


@pytest.mark.parametrize(("rows", "model", "message"), [
    (np.zeros((2, 3)), "default", "3 features per row, but model 'default' expects 8"),
    (np.full((1, 8), np.nan), "default", "row 0, column 0 is nan"),
    (np.zeros((1, 8)), "nosuch", "unknown model 'nosuch'"),
])
def test_bad_input_gets_a_clear_error_and_the_engine_goes_on(  # noqa: PLR0917
    engine: Running, redis_server: redis.Redis, tmp_path: Path, rows: Any, model: str,
    message: str,
) -> None:
    client = client_for(redis_server, tmp_path)
    with pytest.raises(Invalid, match=message):
        client.predict(rows, model=model, timeout=5)
    assert client.predict(np.zeros((1, 8)), timeout=5).shape == (1,)


def test_a_request_past_its_deadline_is_expired_and_never_predicted(
    engine: Running, redis_server: redis.Redis, tmp_path: Path
) -> None:
    rows_before = engine.engine.counts["rows"]
    fields = protocol.encode_request("late-1", "default", np.zeros((1, 8)),
                                     int(time.time() * 1000) - 50)
    redis_server.xadd(STREAM, fields)
    _, payload = redis_server.blpop([protocol.REPLY_PREFIX + "late-1"], timeout=5)
    header, _ = protocol.decode_reply(payload)
    assert header["status"] == "expired" and "deadline passed" in header["error"]
    assert engine.engine.counts["rows"] == rows_before
    client = client_for(redis_server, tmp_path)
    with pytest.raises(Expired, match="deadline passed"):
        client.predict(np.zeros((1, 8)), timeout=5, deadline=time.time() - 1)
    assert engine.engine.counts["rows"] == rows_before


def test_no_engine_means_a_timeout_that_says_so(redis_server: redis.Redis,
                                                 tmp_path: Path) -> None:
    client = client_for(redis_server, tmp_path)
    with pytest.raises(PredictionTimeout, match="is the ml_engine running"):
        client.predict(np.zeros((1, 8)), timeout=0.2)


def test_a_full_backlog_is_refused_at_once_and_nothing_is_added(
    redis_server: redis.Redis, tmp_path: Path
) -> None:
    client = client_for(redis_server, tmp_path, max_backlog=2)
    for n in range(2):
        redis_server.xadd(STREAM, {"id": f"waiting-{n}"})
    started = time.monotonic()
    with pytest.raises(BacklogFull, match="2 requests are waiting"):
        client.predict(np.zeros((1, 8)), timeout=5)
    assert time.monotonic() - started < 1  # told at once, not after the timeout
    assert redis_server.xlen(STREAM) == 2
    assert redis_server.keys(protocol.REPLY_PREFIX + "*") == []  # the refusal was popped


def test_a_json_request_from_redis_cli_gets_a_json_answer(
    engine: Running, redis_server: redis.Redis, registry: ModelRegistry
) -> None:
    x, _ = features_and_labels(synthetic_bars(100, seed=4))
    rows = json.dumps({"rows": x[:2].astype(float).tolist()})
    port = redis_server.connection_pool.connection_kwargs["port"]
    deadline = str(int(time.time() * 1000) + 5000)
    cli = ["redis-cli", "-p", str(port), "--no-auth-warning"]
    env = {"REDISCLI_AUTH": PASSWORD, "PATH": "/usr/bin:/bin"}
    subprocess.run([*cli, "XADD", STREAM, "*", "id", "cli-1", "model", "default",
                    "deadline_ms", deadline, "json", rows], env=env, check=True,
                   capture_output=True)
    done = subprocess.run([*cli, "BLPOP", "ml:reply:cli-1", "5"], env=env, check=True,
                          capture_output=True, text=True)
    answer = json.loads(done.stdout.splitlines()[-1])
    booster = xgb.Booster(model_file=str(registry.get("default").model_file))
    expected = booster.inplace_predict(x[:2].astype(np.float32))
    assert answer["status"] == "ok"
    np.testing.assert_array_equal(np.asarray(answer["predictions"], np.float32), expected)


def test_unparseable_and_poison_entries_go_to_the_dead_letter_stream(
    engine: Running, redis_server: redis.Redis
) -> None:
    redis_server.xadd(STREAM, {"garbage": "x"})
    wait_for(lambda: redis_server.xlen(DEAD_LETTERS) == 1)
    reason = redis_server.xrange(DEAD_LETTERS)[0][1][b"reason"].decode()
    assert "unknown field(s) ['garbage']" in reason
    # A request some worker took three times and never answered (it died each time).
    engine.stop.set()
    engine.thread.join(5)
    poison = redis_server.xadd(STREAM, protocol.encode_request(
        "poison-1", "default", np.zeros((1, 8)), int(time.time() * 1000) + 60000))
    redis_server.xreadgroup(GROUP, "doomed", {STREAM: ">"}, count=10)  # delivery 1
    for _ in range(2):
        redis_server.xclaim(STREAM, GROUP, "doomed", 0, [poison])  # deliveries 2 and 3
    engine.engine._next_claim = 0.0
    time.sleep(0.15)  # idle past claim_idle_ms, as a dead consumer's entry would be
    engine.engine.step()
    _, payload = redis_server.blpop([protocol.REPLY_PREFIX + "poison-1"], timeout=5)
    header, _ = protocol.decode_reply(payload)
    assert header["status"] == "failed" and "delivered" in header["error"]
    assert redis_server.xlen(DEAD_LETTERS) == 2
    assert redis_server.xpending(STREAM, GROUP)["pending"] == 0


def test_redis_cli_is_installed() -> None:
    assert shutil.which("redis-cli"), "redis-cli comes with redis-server (bootstrap.sh)"


def test_metrics_count_every_request_in_histograms_and_gauges(
    engine: Running, redis_server: redis.Redis, tmp_path: Path
) -> None:
    metrics = EngineMetrics(engine.engine, redis_server)
    engine.engine.on_batch = metrics.batch
    client = client_for(redis_server, tmp_path)
    for _ in range(30):
        client.predict(np.zeros((2, 8)), timeout=5)
    with pytest.raises(Invalid):
        client.predict(np.zeros((1, 3)), timeout=5)
    redis_server.xadd(STREAM, {"garbage": "x"})
    model = [("default", {"kind": "xgboost", "device": "cpu", "version": 1})]

    def scraped() -> dict[tuple[str, Labels], float]:
        return metric_samples(metrics.render(model).decode())

    def settled() -> dict[tuple[str, Labels], float] | None:
        """A scrape that saw the dead letter's batch (observed just after its commit) and
        the stream after it (read before the histograms in the same scrape)."""
        found = scraped()
        done = found[("ml_engine_request_duration_seconds_count", ())] == 32
        return found if done and found[("ml_engine_stream_length", ())] == 0 else None

    values = wait_for(settled)
    assert values[("ml_engine_requests_total", (("outcome", "ok"),))] == 30
    assert values[("ml_engine_requests_total", (("outcome", "invalid"),))] == 1
    assert values[("ml_engine_dead_lettered_total", ())] == 1
    assert values[("ml_engine_request_duration_seconds_count", ())] == 32
    assert values[("ml_engine_queue_wait_seconds_count", ())] == 32
    assert values[("ml_engine_batch_rows_sum", ())] == 60  # rows that reached the model
    assert values[("ml_engine_request_duration_seconds_bucket", (("le", "+Inf"),))] == 32
    assert values[("ml_engine_stream_length", ())] == 0
    assert values[("ml_engine_pending", ())] == 0
    assert values[("ml_engine_dead_letters", ())] == 1
    assert values[("ml_engine_model_version", (("device", "cpu"), ("kind", "xgboost"),
                                               ("model", "default")))] == 1


def test_a_redis_out_of_memory_refuses_at_once_and_the_client_recovers(
    engine: Running, redis_server: redis.Redis, tmp_path: Path
) -> None:
    client = client_for(redis_server, tmp_path)
    redis_server.config_set("maxmemory", "1")  # noeviction: every write is refused
    try:
        started = time.monotonic()
        with pytest.raises(Refused, match="Redis refused it: command not allowed when used memory"):
            client.predict(np.zeros((1, 8)), timeout=5)
        assert time.monotonic() - started < 1  # told at once, not after the timeout
    finally:
        redis_server.config_set("maxmemory", "0")
    assert client.predict(np.zeros((1, 8)), timeout=5).shape == (1,)  # a new connection


def test_a_lone_client_costs_one_stream_read_per_request(
    engine: Running, redis_server: redis.Redis, tmp_path: Path
) -> None:
    """One client sending in turn: the engine does not ask the stream for company it never
    finds (a round trip per request); it still checks now and then, and gathers when
    requests come together."""
    client = client_for(redis_server, tmp_path)
    row = np.zeros((1, 8), dtype=np.float32)
    client.predict(row, timeout=5)  # warm: the model's first call
    redis_server.config_resetstat()
    begun = time.monotonic()
    for _ in range(60):
        client.predict(row, timeout=5)
    took = time.monotonic() - begun
    reads = int(redis_server.info("commandstats")["cmdstat_xreadgroup"]["calls"])
    idle_polls = took / 0.020 + 2  # block_ms=20 while it waits for the next request
    assert reads <= 60 + 60 / 32 + idle_polls, (reads, took)
    # Eight clients at once: requests are read together, several per batch.
    clients = [client_for(redis_server, tmp_path) for _ in range(8)]
    batches = engine.engine.counts["batches"]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: [clients[n].predict(row, timeout=5) for _ in range(50)],
                      range(8)))
    assert engine.engine.counts["batches"] - batches < 400


def submit(server: redis.Redis, request_id: str) -> str:
    """XADD one single-row request; the key of its reply list."""
    fields = protocol.encode_request(request_id, "default", np.zeros((1, 8)),
                                     int(time.time() * 1000) + 60_000)
    server.xadd(STREAM, fields)
    return protocol.REPLY_PREFIX + request_id


def pending(server: redis.Redis) -> int:
    return int(server.xpending(STREAM, GROUP)["pending"])


def test_a_stop_answers_what_the_read_sent_ahead_brings(
    redis_server: redis.Redis, registry: ModelRegistry, tmp_path: Path
) -> None:
    """A commit leaves with the next read, so Redis may hand the engine a request while it
    stops: finish() answers it, and sends no read after it."""
    worker = idle_engine(redis_server, registry, tmp_path)
    first = submit(redis_server, "ahead-1")
    assert worker.step() == 1 and redis_server.llen(first) == 1
    second = submit(redis_server, "ahead-2")  # delivered to the read sent with the commit
    assert worker.finish() == 1
    assert redis_server.llen(second) == 1 and pending(redis_server) == 0
    submit(redis_server, "ahead-3")
    time.sleep(0.05)  # more than block_ms: a read left behind would have taken it
    assert pending(redis_server) == 0 and redis_server.xlen(STREAM) == 1
    assert worker.finish() == 0


def test_a_refused_commit_leaves_its_batch_pending_and_answers_it_later(
    redis_server: redis.Redis, registry: ModelRegistry, tmp_path: Path
) -> None:
    """Redis refuses the commit (out of memory): the request stays pending, unanswered,
    and once Redis takes writes again the engine reads its own pending entries first."""
    worker = idle_engine(redis_server, registry, tmp_path)
    reply = submit(redis_server, "refused-1")
    redis_server.config_set("maxmemory", "1")  # noeviction: the commit script is refused
    try:
        with pytest.raises(redis.OutOfMemoryError):
            worker.step()
        assert pending(redis_server) == 1 and redis_server.llen(reply) == 0
    finally:
        redis_server.config_set("maxmemory", "0")
    assert worker.step() == 1
    header, _ = protocol.decode_reply(redis_server.lpop(reply))
    assert header["status"] == "ok" and header["id"] == "refused-1"
    assert pending(redis_server) == 0 and worker.counts["ok"] == 1
