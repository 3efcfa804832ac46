"""The disk fills up under a running stack (a real tmpfs as UNISTACK_HOME, filled until
ENOSPC): the hub survives on every file it writes, keeps answering `status` and `alerts`
from memory, says "disk full" once per filesystem, and resumes writing when space
returns, delivering what it held once."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from harness.slack import SlackStandIn
from harness.stacks import Stack, write_env_file
from harness.waiting import wait_for
from tests.chaos.test_alerts import about, slack  # noqa: F401 -- the stand-in fixture
from tests.chaos.test_chaos import FAULT_TRIALS, events, services, start
from tests.chaos.test_redis_faults import fill_disk

pytestmark = pytest.mark.chaos


@contextlib.contextmanager
def tmpfs_home(stack: Stack, size: str = "300m") -> Iterator[None]:
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                    str(stack.home)], check=True)
    try:
        yield
    finally:
        stack.cleanup()
        subprocess.run(["umount", "-l", str(stack.home)], check=False)


def status(stack: Stack) -> dict:  # type: ignore[type-arg]
    done = stack.cli("status", "--json")
    return dict(json.loads(done.stdout))


def hub_pid_now(stack: Stack) -> int:
    try:
        return int(services(stack)["hub"]["pid"])
    except OSError:  # the new hub is not listening yet
        return 0


def test_a_full_disk_is_survived_reported_once_and_recovered(
    stack: Stack, slack: SlackStandIn  # noqa: F811
) -> None:
    with tmpfs_home(stack):
        write_env_file(stack.home, SLACK_WEBHOOK_URL=slack.webhook_url)
        start(stack, **FAULT_TRIALS, RESOURCE_INTERVAL="0.5")
        hub_pid = services(stack)["hub"]["pid"]
        filler = fill_disk(stack.home)
        warnings = wait_for(lambda: [w for w in status(stack)["warnings"]
                                     if w.startswith("disk full")], timeout=10)
        assert len(warnings) == 1 and str(stack.home) in warnings[0]  # one filesystem
        shown = stack.cli("status")
        assert "warning: disk full" in shown.stdout
        assert stack.cli("alerts").returncode == 0
        disk = [e for e in events(stack, "resource") if "free disk" in e["detail"]]
        assert len(disk) == 1
        # a hub killed now must come back (it crash-looped on its own files before)
        os.kill(hub_pid, signal.SIGKILL)
        wait_for(lambda: hub_pid_now(stack) not in (0, hub_pid), timeout=15)
        new_hub = services(stack)["hub"]["pid"]
        time.sleep(3)
        assert services(stack)["hub"]["pid"] == new_hub  # no crash loop
        assert services(stack)["redis"]["state"] in ("READY", "DEGRADED")
        filler.unlink()
        wait_for(lambda: not status(stack)["warnings"], timeout=15)
        wait_for(lambda: about(slack, "free disk"), timeout=15)
        time.sleep(2)
        # One incident opened about the disk: no second one (resolutions, and an update of
        # the same incident when a dependent such as the engine joins it, are not new ones).
        opened = [t for t in about(slack, "free disk") if "resolved" not in t.lower()
                  and "✅" not in t and ":arrows_counterclockwise:" not in t]
        assert len(opened) == 1, about(slack, "free disk")
        assert list((stack.home / "var/log/incidents").glob("*-hub.txt"))  # written now
