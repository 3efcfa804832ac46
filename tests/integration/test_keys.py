"""The trading API keys through the scripts operators run: setup_env.sh, update_api_keys.sh,
verify_api_keys.py (`keys setup|update|set|show|verify`), against a local stand-in for
each provider; every output, record and log searched for the raw keys."""

from __future__ import annotations

import json
import os
import pty
import random
import select
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from harness.slack import SlackStandIn
from harness.stacks import Stack, make_home, stack_environment
from harness.waiting import wait_for
from tests.chaos.test_alerts import about
from tests.chaos.test_chaos import hub, start
from tests.conftest import ROOT
from tests.provider_standin import SLOW_S, ProviderStandIn
from unistack import envfile

pytestmark = pytest.mark.integration

KEYS = {"POLYGON_API_KEY": "Pq7Zr2Lm9Xc4Vb8Nn3Ty6Uh1Jk5Gf0Ds",
        "UNUSUAL_WHALES_API_KEY": "3f2b9c1e-7a4d-4e8b-9c2f-1a6d5e8b7c3d",
        "ALPACA_API_KEY_ID": "PKZ8QW3ER5TY7UI9OP1A",
        "ALPACA_API_SECRET_KEY": "wX9vB2nM4kL6jH8gF0dS3aQ5zR7tY1uI3oP5eW7c"}
PROVIDERS = ("polygon", "unusual_whales", "alpaca")


@pytest.fixture
def providers() -> Iterator[ProviderStandIn]:
    with ProviderStandIn() as standin:
        yield standin


@pytest.fixture
def home(providers: ProviderStandIn) -> Iterator[Stack]:
    """A home (no stack running) whose base URLs point at the stand-in."""
    path = make_home()
    env = stack_environment(path)
    env.update(POLYGON_BASE_URL=providers.base_url("polygon"),
               UNUSUAL_WHALES_BASE_URL=providers.base_url("unusual_whales"),
               ALPACA_BASE_URL=providers.base_url("paper-api.alpaca"))
    yield Stack(path, env)
    subprocess.run(["rm", "-rf", str(path)], check=False)


def run(home: Stack, *argv: str, stdin: str = "", env: dict[str, str] | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ROOT / "scripts" / argv[0]), *argv[1:]],
                          env={**home.env, **(env or {})}, input=stdin, capture_output=True,
                          text=True, timeout=timeout, check=False)


def with_keys(home: Stack, *flags: str, **overrides: str) -> None:
    done = run(home, "setup_env.sh", "--non-interactive", *flags, env={**KEYS, **overrides})
    assert done.returncode == 0, done.stdout + done.stderr


def everything(home: Stack, *outputs: subprocess.CompletedProcess[str]) -> str:
    """Every output, and every file of the home but .env itself and its backup."""
    texts = [o.stdout + o.stderr for o in outputs]
    for path in home.home.rglob("*"):
        if path.is_file() and path.name not in (".env", ".env.bak"):
            texts.append(path.read_text(errors="replace"))
    return "\n".join(texts)


def no_key_in(text: str, keys: dict[str, str] = KEYS) -> None:
    for name, value in keys.items():
        assert value not in text, f"{name}'s value appears"
        assert value[:12] not in text, f"the start of {name}'s value appears"


def verify(home: Stack, *argv: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    done = run(home, "verify_api_keys.py", "--json", "--timeout", "1", *argv)
    return done, {r["provider"]: r for r in json.loads(done.stdout)["results"]}


# --- verify -----------------------------------------------------------------------------


class Case(NamedTuple):
    mode: str  # what the stand-in answers
    status: str  # what verify reports
    code: int  # its exit code
    said: str  # in each result's detail


CASES = [Case("valid", "valid", 0, "200, the keys work"),
         Case("401", "rejected", 2, "HTTP 401: the provider refused the keys"),
         Case("403", "rejected", 2, "HTTP 403: the provider refused the keys"),
         Case("429", "rate-limited", 1, "retry after 7 s"),
         Case("slow", "unreachable", 1, "no answer within 1 s"),
         Case("malformed", "unreachable", 1, "answered 200 but not with JSON"),
         Case("foreign", "unreachable", 1, "answered JSON that is not"),
         Case("503", "unreachable", 1, "HTTP 503")]


@pytest.mark.parametrize("case", CASES, ids=[c.mode for c in CASES])
def test_each_outcome_of_each_provider_is_reported_and_no_key_appears(
        home: Stack, providers: ProviderStandIn, case: Case) -> None:
    mode, status, code, said = case
    with_keys(home)
    for name in ("polygon", "unusual_whales", "paper-api.alpaca"):
        providers.answer(name, mode)
    begun = time.monotonic()
    done, results = verify(home)
    assert done.returncode == code, done.stdout + done.stderr
    assert {name: r["status"] for name, r in results.items()} == dict.fromkeys(PROVIDERS,
                                                                               status)
    assert all(said in r["detail"] for r in results.values()), results
    if mode == "slow":  # asked at once: the slowest sets the time, not their sum
        assert time.monotonic() - begun < SLOW_S
    seen = {r.provider: r for r in providers.requests}
    assert seen["polygon"].headers["authorization"] == f"Bearer {KEYS['POLYGON_API_KEY']}"
    assert seen["unusual_whales"].headers["authorization"] == \
        f"Bearer {KEYS['UNUSUAL_WHALES_API_KEY']}"
    assert seen["paper-api.alpaca"].headers["apca-api-key-id"] == KEYS["ALPACA_API_KEY_ID"]
    assert seen["paper-api.alpaca"].headers["apca-api-secret-key"] == \
        KEYS["ALPACA_API_SECRET_KEY"]
    assert seen["paper-api.alpaca"].path == "/paper-api.alpaca/v2/account"
    assert all(not any(v in r.path for v in KEYS.values()) for r in providers.requests)
    no_key_in(everything(home, done))


def test_missing_and_malformed_keys_are_said_and_never_sent(
        home: Stack, providers: ProviderStandIn) -> None:
    with_keys(home, "--force", POLYGON_API_KEY="has-a-dash-and-is-long-enough",
              UNUSUAL_WHALES_API_KEY="")  # --force: written though it fails its format
    done, results = verify(home, "polygon", "unusual_whales")
    assert done.returncode == 2
    assert results["polygon"]["status"] == "malformed"
    assert results["polygon"]["detail"] == (
        "POLYGON_API_KEY (value hidden, 29 characters) is not 20-64 letters, digits or _ "
        "(the dashboard's API key); not sent")
    assert results["unusual_whales"]["status"] == "missing"
    assert "alpaca" not in results  # only the providers named
    assert providers.requests == []


def test_alpaca_is_paper_by_default_and_a_key_for_the_other_endpoint_is_refused(
        home: Stack, providers: ProviderStandIn) -> None:
    show = subprocess.run([sys.executable, "-m", "unistack", "config"],
                          env={k: v for k, v in home.env.items() if k != "ALPACA_BASE_URL"},
                          capture_output=True, text=True, timeout=30, check=False)
    assert "https://paper-api.alpaca.markets" in show.stdout
    with_keys(home, ALPACA_API_KEY_ID="AKZ8QW3ER5TY7UI9OP1A")  # a live key id
    done, results = verify(home, "alpaca")
    assert results["alpaca"]["status"] == "malformed"
    assert "a live key (AK...) but ALPACA_BASE_URL" in results["alpaca"]["detail"]
    assert "set ALPACA_BASE_URL to https://api.alpaca.markets" in results["alpaca"]["detail"]
    assert providers.requests == [] and done.returncode == 2
    live = {"ALPACA_BASE_URL": providers.base_url("alpaca")}  # no "paper-api." in it
    done = run(home, "verify_api_keys.py", "--json", "alpaca", env=live)
    assert json.loads(done.stdout)["results"][0]["status"] == "valid"


# --- setup, update, show ----------------------------------------------------------------


def test_setup_creates_env_0600_with_the_internal_secrets_and_the_keys(home: Stack) -> None:
    done = run(home, "setup_env.sh", "--non-interactive", env=KEYS)
    assert done.returncode == 0, done.stderr
    env_file = home.home / ".env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    values = {a.key: a.value for a in envfile.read(env_file)}
    assert {k: values[k] for k in KEYS} == KEYS
    assert len(values["REDIS_PASSWORD"]) >= 32 and len(values["UNISTACK_OPERATOR_TOKEN"]) >= 32
    assert f"POLYGON_API_KEY          ****{KEYS['POLYGON_API_KEY'][-4:]}" in done.stdout
    again = run(home, "setup_env.sh", "--non-interactive", env=KEYS)  # idempotent
    assert {a.key: a.value for a in envfile.read(env_file)} == values
    piped = run(home, "setup_env.sh")  # no terminal, not told: refuses, asks nothing
    assert piped.returncode == 2 and "--non-interactive" in piped.stderr
    shown = run(home, "manage_production.sh", "keys", "show")
    assert f"ALPACA_API_SECRET_KEY    ****{KEYS['ALPACA_API_SECRET_KEY'][-4:]}" in shown.stdout
    no_key_in(everything(home, done, again, piped, shown))


def test_update_replaces_one_key_at_a_time_and_keeps_the_previous_file(home: Stack) -> None:
    with_keys(home)
    env_file = home.home / ".env"
    before = env_file.read_text()
    new = "Zz9Yy8Xx7Ww6Vv5Uu4Tt3Ss2Rr1Qq0Pp"
    # One line of stdin per key, in order: a new Polygon key, Enter for the others.
    done = run(home, "update_api_keys.sh", stdin=f"{new}\n\n\n\n")
    assert done.returncode == 0, done.stderr
    assert f"POLYGON_API_KEY: ****{KEYS['POLYGON_API_KEY'][-4:]} -> ****{new[-4:]}" in \
        done.stdout
    assert f"ALPACA_API_KEY_ID: kept ****{KEYS['ALPACA_API_KEY_ID'][-4:]}" in done.stdout
    after = {a.key: a.value for a in envfile.read(env_file)}
    assert after["POLYGON_API_KEY"] == new and after["ALPACA_API_KEY_ID"] == \
        KEYS["ALPACA_API_KEY_ID"]
    backup = home.home / ".env.bak"
    assert backup.read_text() == before
    assert stat.S_IMODE(backup.stat().st_mode) == stat.S_IMODE(env_file.stat().st_mode) == 0o600
    bad = run(home, "update_api_keys.sh", "ALPACA_API_KEY_ID", stdin="not a key\n")
    assert bad.returncode == 1 and "is not PK... (paper) or AK... (live)" in bad.stderr
    assert {a.key: a.value for a in envfile.read(env_file)} == after  # nothing written
    unknown = run(home, "update_api_keys.sh", "REDIS_PASSWORD", stdin="x\n")
    assert unknown.returncode == 1 and "REDIS_PASSWORD: not an API key" in unknown.stderr
    no_key_in(everything(home, done, bad, unknown), {**KEYS, "new": new})


def test_set_reads_the_value_from_stdin_never_the_command_line(home: Stack) -> None:
    with_keys(home)
    new = "Aa1Bb2Cc3Dd4Ee5Ff6Gg7Hh8Ii9Jj0Kk"
    child = subprocess.Popen([sys.executable, "-m", "unistack", "keys", "set",
                              "POLYGON_API_KEY"], env=home.env, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cmdline = Path(f"/proc/{child.pid}/cmdline").read_bytes().decode()
    out, err = child.communicate(f"{new}\n", timeout=30)
    assert child.returncode == 0, err
    assert new not in cmdline and new not in out + err
    assert f"POLYGON_API_KEY = ****{new[-4:]}" in out


def test_an_update_killed_at_any_point_leaves_the_old_or_the_new_env_0600(
        home: Stack) -> None:
    with_keys(home)
    env_file = home.home / ".env"
    old = env_file.read_text()
    rng = random.Random(7)
    # Killed before Python has started, while it reads, writes or renames, and after.
    delays = [0.0, 2.0] + [rng.uniform(0.05, 0.6) for _ in range(28)]
    outcomes = set()
    for attempt, delay in enumerate(delays):
        new_key = f"Kill{attempt:02d}Xy7Zr2Lm9Xc4Vb8Nn3Ty6Uh"
        child = subprocess.Popen([sys.executable, "-m", "unistack", "keys", "set",
                                  "POLYGON_API_KEY"], env=home.env, stdin=subprocess.PIPE,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert child.stdin
        child.stdin.write(f"{new_key}\n".encode())
        child.stdin.close()
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait()
        text = env_file.read_text()
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
        assert text in (old, old_with(old, new_key)), attempt  # whole: the old or the new
        outcomes.add("old" if text == old else "new")
        backup = home.home / ".env.bak"
        if backup.exists():
            assert stat.S_IMODE(backup.stat().st_mode) == 0o600
            envfile.parse(backup.read_text(), ".env.bak")  # whole, too
        old = text
    assert outcomes == {"old", "new"}, outcomes
    leftovers = [p.name for p in home.home.iterdir() if p.name.startswith("..env")]
    done = subprocess.run([sys.executable, "-m", "unistack", "keys", "set", "POLYGON_API_KEY"],
                          env=home.env, input=f"{KEYS['POLYGON_API_KEY']}\n", text=True,
                          capture_output=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert [p.name for p in home.home.iterdir() if p.name.startswith("..env")] == [], \
        leftovers  # a killed update's temporary file is cleared by the next one


def old_with(text: str, polygon: str) -> str:
    """TEXT with POLYGON_API_KEY replaced, as an update writes it."""
    return "".join(f"POLYGON_API_KEY={polygon}\n" if line.startswith("POLYGON_API_KEY=")
                   else line for line in text.splitlines(keepends=True))


# --- the hub and Slack ------------------------------------------------------------------


def test_a_rejected_key_is_a_warning_alert_naming_the_provider_and_a_valid_one_resolves_it(
        stack: Stack, providers: ProviderStandIn) -> None:
    with SlackStandIn() as slack:
        stack.env.update(ALPACA_BASE_URL=providers.base_url("paper-api.alpaca"),
                         SLACK_WEBHOOK_URL=slack.webhook_url)
        with_keys(stack)
        start(stack)
        wait_for(lambda: about(slack, "startup complete"), timeout=15)
        providers.answer("paper-api.alpaca", "401")
        done, results = verify(stack, "alpaca")
        assert results["alpaca"]["status"] == "rejected" and done.returncode == 2
        assert json.loads(done.stdout)["hub"] == "told"
        [event] = [e for e in hub(stack, "/events")["events"] if e["kind"] == "key_rejected"]
        assert (event["service"], event["severity"]) == ("alpaca", "warning")
        assert event["detail"].startswith("Alpaca API keys rejected: GET ")
        warned = wait_for(lambda: about(slack, "alpaca API keys refused"), timeout=15)
        keys = hub(stack, "/status")["keys"]["providers"]
        assert keys["alpaca"]["status"] == "rejected" and keys["alpaca"]["keys"] == {
            "ALPACA_API_KEY_ID": True, "ALPACA_API_SECRET_KEY": True}
        assert keys["polygon"]["keys"] == {"POLYGON_API_KEY": True}
        assert keys["polygon"].get("status") is None  # not verified yet
        providers.answer("paper-api.alpaca", "valid")
        again, results = verify(stack, "alpaca")
        assert results["alpaca"]["status"] == "valid" and again.returncode == 0
        wait_for(lambda: [t for t in about(slack, "alpaca") if "resolved" in t.lower()
                          or "✅" in t], timeout=20)
        no_key_in("\n".join(warned) + json.dumps(slack.requests, default=str)
                  + everything(stack, done, again))
        assert stack.cli("stop").returncode == 0


def test_setup_on_a_terminal_asks_for_each_key_without_echoing_it(home: Stack) -> None:
    """On a real terminal (a pty): a prompt per key showing the current one masked, the
    typed value never echoed, Enter keeping a key."""
    master, slave = pty.openpty()
    child = subprocess.Popen([str(ROOT / "scripts/setup_env.sh")], env=home.env, stdin=slave,
                             stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    seen = b""

    def until(text: bytes, timeout: float = 30) -> None:
        nonlocal seen
        deadline = time.monotonic() + timeout
        while text not in seen:
            assert time.monotonic() < deadline, seen.decode(errors="replace")
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    seen += os.read(master, 4096)
                except OSError:  # the child closed the terminal
                    break
    try:
        typed = {"POLYGON_API_KEY": KEYS["POLYGON_API_KEY"], "UNUSUAL_WHALES_API_KEY": "",
                 "ALPACA_API_KEY_ID": KEYS["ALPACA_API_KEY_ID"],
                 "ALPACA_API_SECRET_KEY": KEYS["ALPACA_API_SECRET_KEY"]}
        for key, value in typed.items():
            until(f"{key} [(not set); Enter keeps it]: ".encode())
            os.write(master, f"{value}\r".encode())
        until(b"not set: UNUSUAL_WHALES_API_KEY")
        assert child.wait(timeout=30) == 0
    finally:
        child.kill()
        os.close(master)
    shown = seen.decode(errors="replace")
    no_key_in(shown)  # not echoed, not printed
    assert f"ALPACA_API_SECRET_KEY    ****{KEYS['ALPACA_API_SECRET_KEY'][-4:]}" in shown
    values = {a.key: a.value for a in envfile.read(home.home / ".env")}
    assert values["POLYGON_API_KEY"] == KEYS["POLYGON_API_KEY"]
    assert "UNUSUAL_WHALES_API_KEY" not in values


def test_a_key_from_a_file_as_docker_and_kubernetes_mount_it_is_used_and_not_shown(
        home: Stack, providers: ProviderStandIn, tmp_path: Path) -> None:
    secret = tmp_path / "polygon"
    secret.write_text(KEYS["POLYGON_API_KEY"] + "\n")
    secret.chmod(0o400)
    done = run(home, "verify_api_keys.py", "--json", "polygon",
               env={"POLYGON_API_KEY_FILE": str(secret)})
    assert json.loads(done.stdout)["results"][0]["status"] == "valid", done.stdout
    assert providers.requests[0].headers["authorization"] == \
        f"Bearer {KEYS['POLYGON_API_KEY']}"
    shown = run(home, "manage_production.sh", "keys", "show",
                env={"POLYGON_API_KEY_FILE": str(secret)})
    assert f"****{KEYS['POLYGON_API_KEY'][-4:]}" in shown.stdout
    assert f"(the file {secret} (POLYGON_API_KEY_FILE))" in shown.stdout
    no_key_in(everything(home, done, shown))
