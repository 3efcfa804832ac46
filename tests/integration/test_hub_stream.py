"""The hub's live event stream, its audit of control actions and its incident files, on a
real stack: what the dashboard relays to the browser."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from harness.stacks import Stack
from harness.waiting import wait_for
from tests.chaos.test_chaos import events, settle_past_startsecs, start
from unistack.config import load_settings
from unistack.hub.client import HubClient

pytestmark = pytest.mark.integration


def messages(chunks: Iterator[bytes]) -> Iterator[dict[str, Any]]:
    """Server-sent events as {"event", "id", "data"}, parsed as they arrive."""
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            fields: dict[str, Any] = {}
            for line in block.decode().splitlines():
                name, _, value = line.partition(": ")
                if name in ("event", "id", "data"):
                    fields[name] = value
            if "data" in fields:
                fields["data"] = json.loads(fields["data"])
                yield fields


class Reader:
    """Reads one stream in a thread, keeping every message with the time it arrived."""

    def __init__(self, stack: Stack, last_event_id: str | None = None) -> None:
        self.got: list[tuple[float, dict[str, Any]]] = []
        client = HubClient(load_settings(environ=stack.env))
        self._stream = client.stream(last_event_id)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for message in messages(self._stream):
            self.got.append((time.time(), message))

    def events(self, kind: str, service: str) -> list[tuple[float, dict[str, Any]]]:
        return [(at, m["data"]) for at, m in self.got if m.get("event") == "event"
                and m["data"]["kind"] == kind and m["data"]["service"] == service]

    def statuses(self) -> list[dict[str, Any]]:
        return [m["data"] for _, m in self.got if m.get("event") == "status"]


def post(stack: Stack, path: str, token: str | None, actor: str = "") -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{stack.port('HUB_PORT')}{path}",
                                     data=b"", method="POST")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    if actor:
        request.add_header("X-Unistack-Actor", actor)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_crash_reaches_the_stream_with_the_new_status_at_once(stack: Stack) -> None:
    start(stack)
    reader = Reader(stack)
    wait_for(reader.statuses, timeout=5)  # the current status comes first
    os.kill(settle_past_startsecs(stack, "redis"), signal.SIGKILL)
    [(arrived, crashed)] = wait_for(lambda: reader.events("crashed", "redis"), timeout=10)
    assert arrived - crashed["ts"] < 1.0  # on screen within a second of the hub's record
    after = [s for at, m in reader.got if m.get("event") == "status" and at >= arrived
             for s in [m["data"]]]
    assert after and next(x for x in after[0]["services"] if x["name"] == "redis")[
        "state"] != "READY"
    wait_for(lambda: reader.events("recovered", "redis"), timeout=20)


def test_a_reconnecting_reader_gets_what_it_missed(stack: Stack) -> None:
    start(stack)
    first = events(stack)[-1]
    os.kill(settle_past_startsecs(stack, "ml_engine"), signal.SIGKILL)
    wait_for(lambda: events(stack, "crashed", "ml_engine"), timeout=10)
    reader = Reader(stack, last_event_id=str(first["id"]))
    [(_, replayed)] = wait_for(lambda: reader.events("crashed", "ml_engine"), timeout=5)
    assert replayed["id"] > first["id"]
    ids = [m["data"]["id"] for _, m in reader.got if m.get("event") == "event"]
    assert ids == sorted(ids) and first["id"] not in ids


def test_control_actions_are_audited_with_who_asked_and_refused_without_the_token(
    stack: Stack,
) -> None:
    start(stack)
    token = load_settings(environ=stack.env).unistack_operator_token
    assert post(stack, "/services/prometheus/restart", None) == 401
    assert post(stack, "/services/prometheus/restart", "wrong-token") == 401
    assert not events(stack, "audit")  # refused for want of a token: nothing done
    assert post(stack, "/services/prometheus/restart", token,
                actor="dashboard from 127.0.0.9") == 202
    assert post(stack, "/services/nosuch/restart", token, actor="cli (ops)") == 404
    audits = wait_for(lambda: events(stack, "audit") if len(events(stack, "audit")) == 2
                      else None, timeout=5)
    assert audits[0]["service"] == "prometheus"
    assert audits[0]["detail"] == ("restart of prometheus by dashboard from 127.0.0.9: done")
    assert audits[0]["actor"] == "dashboard from 127.0.0.9"
    assert audits[1]["detail"].startswith("restart of nosuch by cli (ops): refused (")


def test_an_incident_file_is_served_by_name_and_nothing_else_is(stack: Stack) -> None:
    start(stack)
    os.kill(settle_past_startsecs(stack, "redis"), signal.SIGSTOP)
    [hung] = wait_for(lambda: events(stack, "hung", "redis"), timeout=10)
    name = os.path.basename(hung["incident"])
    base = f"http://127.0.0.1:{stack.port('HUB_PORT')}/incidents/"
    with urllib.request.urlopen(base + name, timeout=5) as response:
        text = response.read().decode()
    assert text.startswith("incident: redis at ") and "verdict: liveness failed" in text
    for bad in ("..%2F.env", "nosuch.txt", ".env", "hub.log"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(base + bad, timeout=5)
        assert refused.value.code == 404


def test_status_carries_what_the_cards_show(stack: Stack) -> None:
    start(stack, RESOURCE_INTERVAL="0.5")
    hub = HubClient(load_settings(environ=stack.env))

    def facts(name: str) -> dict[str, Any]:
        document = hub.get("/status")[1]
        return next(s for s in document["services"] if s["name"] == name)["facts"]

    redis = wait_for(lambda: facts("redis"), timeout=10)
    assert redis["aof_enabled"] is True and redis["aof_last_write_status"] == "ok"
    assert redis["used_memory_bytes"] > 0 and redis["connected_clients"] >= 1
    targets = wait_for(lambda: facts("prometheus").get("targets_up"), timeout=20)
    assert targets >= 1
    engine = wait_for(lambda: facts("ml_engine"), timeout=10)
    assert [m["name"] for m in engine["models"]] == ["default"]
    assert engine["device"] == "cpu" and {"stream_length", "pending", "dead_letters"} <= set(
        engine)
    document = wait_for(lambda: (d := hub.get("/status")[1])["system"]["disks"] and d,
                        timeout=10)
    assert document["gpu"]["available"] is False
    assert document["gpu"]["reason"].startswith("no GPU on this host")
    assert 0 <= document["system"]["memory_percent"] <= 100
    assert any(str(stack.home) in disk["path"] for disk in document["system"]["disks"])
    assert facts("hub") == {}  # the hub has no card facts of its own


def test_a_state_change_without_an_event_reaches_the_stream(stack: Stack) -> None:
    # An operator's restart: RESTARTING -> READY is no event (the audit told of the
    # action), but the card must turn green now, not with the 10 s keepalive's status.
    start(stack)
    pid = settle_past_startsecs(stack, "redis")
    reader = Reader(stack)
    wait_for(reader.statuses, timeout=5)
    asked = time.time()
    done = stack.cli("restart", "redis", "--no-wait")
    assert done.returncode == 0, done.stderr

    def redis_ready_again() -> float | None:
        for at, message in reader.got:
            if at > asked and message.get("event") == "status":
                redis = next(s for s in message["data"]["services"] if s["name"] == "redis")
                if redis["ready"] and redis["pid"] not in (0, pid):
                    return at
        return None

    ready_at = wait_for(redis_ready_again, timeout=10)
    assert ready_at - asked < 5
    told = {m["data"]["kind"] for at, m in reader.got if at > asked
            and m.get("event") == "event" and m["data"]["service"] == "redis"}
    assert told <= {"audit"}, told  # no event carried the state change
