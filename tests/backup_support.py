"""A home with only a real redis-server running (no supervisord): what backup, verify and
offline restore need, started in a second, plus helpers to fill and fingerprint Redis."""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import redis

from harness.stacks import make_home, stack_environment
from harness.waiting import wait_for
from unistack import runtime
from unistack.config import Settings, load_settings


@dataclass
class RedisHome:
    home: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def settings(self) -> Settings:
        saved = dict(os.environ)
        try:
            os.environ.clear()
            os.environ.update(self.env)
            return load_settings()
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def start_redis(self) -> None:
        """Redis as the stack runs it: the runtime config the hub writes (AOF on)."""
        settings = self.settings()
        runtime.prepare_dirs(settings)
        runtime.write_atomic(settings.run_dir / "redis.conf", runtime.redis_conf(settings))
        self.process = subprocess.Popen(
            [settings.redis_server_bin, str(settings.run_dir / "redis.conf")], cwd=self.home,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._answers, timeout=30)

    def _answers(self) -> bool:
        try:
            return bool(self.client().ping())
        except (redis.ConnectionError, redis.BusyLoadingError):
            return False

    def stop_redis(self, kill: bool = False) -> None:
        if self.process is None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        self.process.wait(30)
        self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=int(self.env["REDIS_PORT"]),
                           password=self.env["REDIS_PASSWORD"], socket_timeout=10)

    def cli(self, *args: str, timeout: float = 300,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "unistack", *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout, check=False,
                              input=stdin)

    @property
    def backups(self) -> Path:
        return self.home / "var" / "backups"

    def cleanup(self) -> None:
        self.stop_redis(kill=True)
        shutil.rmtree(self.home, ignore_errors=True)


def new_redis_home(**extra: str) -> RedisHome:
    home = make_home()
    env = stack_environment(home)
    env["REDIS_PASSWORD"] = secrets.token_hex(16)
    env["UNISTACK_OPERATOR_TOKEN"] = secrets.token_hex(16)
    env.update(extra)
    return RedisHome(home, env, extra=dict(extra))


def fill(client: redis.Redis, count: int, prefix: str = "k", size: int = 64) -> None:
    """COUNT keys PREFIX:<n> holding n's digest repeated to SIZE bytes, plus a stream."""
    pipe = client.pipeline(transaction=False)
    for n in range(count):
        pipe.set(f"{prefix}:{n}", value(n, size))
        if n % 1000 == 999:
            pipe.execute()
    pipe.xadd("stream:events", {"n": count})
    pipe.hset("hash:one", mapping={"a": "1", "b": "2"})
    pipe.execute()


def value(n: int, size: int = 64) -> bytes:
    seed = hashlib.sha256(str(n).encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


def digest(client: redis.Redis, match: str | None = None) -> str:
    """The dataset's content: every key (matching MATCH) with its type and DUMP, sorted
    (DEBUG DIGEST is disabled in our redis.conf)."""
    entries = []
    for key in sorted(client.scan_iter(match=match, count=1000)):
        entries.append(key + b"\0" + client.type(key) + b"\0" + (client.dump(key) or b""))
    return hashlib.sha256(b"\n".join(entries)).hexdigest()


def model_files(settings: Settings, count: int = 3, size: int = 4096) -> dict[str, bytes]:
    """A few registered-model files and market data, for the archive to carry."""
    written = {}
    for n in range(count):
        path = settings.models_dir / "default" / str(n + 1) / "model.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        data = os.urandom(size)
        path.write_bytes(data)
        written[f"models/default/{n + 1}/model.json"] = data
    market = settings.data_dir / "market" / "bars.csv"
    market.parent.mkdir(parents=True, exist_ok=True)
    market.write_bytes(b"timestamp,open,high,low,close,volume\n1,1,1,1,1,1\n")
    written["market/bars.csv"] = market.read_bytes()
    return written
