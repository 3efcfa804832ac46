"""Secrets that come from the environment or a mounted file (containers, Kubernetes)
reach the services through a 0600 runtime file, never through supervisord's
environment or a command line, and `start` says where each one came from."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import psutil

from harness.slack import SlackStandIn
from harness.stacks import Stack
from harness.waiting import wait_for
from tests.chaos.test_alerts import about


def environments(stack: Stack) -> list[str]:
    """The environment of every process of the stack, as text."""
    found = []
    for proc in stack.processes():
        try:
            found.append("\n".join(f"{k}={v}" for k, v in proc.environ().items()))
        except (psutil.AccessDenied, psutil.NoSuchProcess):
            continue
    return found


def test_a_webhook_from_the_environment_or_a_file_reaches_the_hub_and_nothing_else(
        stack: Stack, tmp_path: Path) -> None:
    with SlackStandIn() as slack:
        token = tmp_path / "operator-token"
        token.write_text("operator-token-from-a-mounted-file-0123456789\n")
        stack.env["SLACK_WEBHOOK_URL"] = slack.webhook_url
        stack.env["UNISTACK_OPERATOR_TOKEN_FILE"] = str(token)
        started = stack.cli("start")
        assert started.returncode == 0, started.stderr
        assert "SLACK_WEBHOOK_URL from the environment" in started.stdout
        assert f"UNISTACK_OPERATOR_TOKEN from the file {token}" in started.stdout
        assert slack.webhook_url not in started.stdout + started.stderr
        runtime = stack.home / "var" / "run" / "secrets.env"
        assert stat.S_IMODE(runtime.stat().st_mode) == 0o600
        tested = stack.cli("alert-test")
        assert tested.returncode == 0, tested.stdout + tested.stderr
        wait_for(lambda: about(slack, "test alert"), timeout=15)
        hub = json.loads(stack.cli("alerts", "--json").stdout)
        assert hub["slack"] == "webhook"
        for text in environments(stack):
            assert slack.webhook_url not in text
            assert "operator-token-from-a-mounted-file" not in text
        for proc in stack.processes():
            assert slack.webhook_url not in " ".join(proc.cmdline())
        del stack.env["SLACK_WEBHOOK_URL"]
        stack.cli("stop")
        restarted = stack.cli("start")
        assert restarted.returncode == 0, restarted.stderr
        assert "SLACK_WEBHOOK_URL not set" in restarted.stdout
        assert slack.webhook_url not in runtime.read_text()
