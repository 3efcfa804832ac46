"""diagnose.fixes: the plan (order, one step per fix, no restart done twice) and the
hosts entry, on a temp file standing in for /etc/hosts."""

from __future__ import annotations

from pathlib import Path

from unistack.diagnose import fixes
from unistack.diagnose.findings import fail, ok, warn


def test_every_fix_in_the_order_has_a_function_and_nothing_else_does() -> None:
    assert set(fixes._FIXES) == set(fixes.ORDER)


def test_the_plan_runs_files_then_configuration_then_network_then_services() -> None:
    findings = [
        fail("service.redis", "", "", fix="fix.restart:redis"),
        warn("host.localhost", "", "", fix="fix.hosts"),
        fail("fs.mode:var/data/redis", "", "", fix="fix.permissions"),
        fail("fs.mode:var/log", "", "", fix="fix.permissions"),
        fail("env.permissions", "", "", fix="fix.env-permissions"),
        ok("service.prometheus", ""),
        fail("port.foreign:DASHBOARD_PORT", "", ""),  # no fix: never killed
    ]
    assert fixes.plan(findings) == [
        fixes.Step("fix.env-permissions", ("env.permissions",)),
        fixes.Step("fix.permissions", ("fs.mode:var/data/redis", "fs.mode:var/log")),
        fixes.Step("fix.hosts", ("host.localhost",)),
        fixes.Step("fix.restart:redis", ("service.redis",))]


def test_a_re_rendered_redis_conf_restarts_redis_once() -> None:
    findings = [fail("program.redis", "", "", fix="fix.restart:redis"),
                fail("service.redis", "", "", fix="fix.restart:redis"),
                fail("service.dashboard", "", "", fix="fix.restart:dashboard"),
                fail("drift.runtime:var/run/redis.conf", "", "", fix="fix.runtime-config"),
                fail("drift.runtime:var/run/prometheus/targets/services.json", "", "",
                     fix="fix.runtime-config")]
    assert [step.fix for step in fixes.plan(findings)] == ["fix.runtime-config",
                                                          "fix.restart:dashboard"]


def test_a_restart_of_the_whole_stack_replaces_the_restarts_of_services() -> None:
    findings = [warn("drift.running", "", "", fix="fix.reload"),
                fail("service.dashboard", "", "", fix="fix.restart:dashboard")]
    assert [step.fix for step in fixes.plan(findings)] == ["fix.reload"]


def test_localhost_is_added_on_a_line_of_its_own(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("::1 ip6-localhost")  # no final newline
    assert fixes.add_localhost(hosts) == f"{hosts}: added 127.0.0.1 localhost"
    assert hosts.read_text() == "::1 ip6-localhost\n127.0.0.1\tlocalhost\n"


def test_a_hosts_file_that_cannot_be_written_is_left_saying_how(tmp_path: Path) -> None:
    hosts = tmp_path / "no-such-directory" / "hosts"
    said = fixes.add_localhost(hosts)
    assert said.startswith(f"{hosts} is not writable by uid ")
    assert said.endswith(f"as root, echo '127.0.0.1 localhost' >> {hosts}")
    assert not hosts.parent.exists()


def test_a_service_whose_port_another_program_holds_is_not_restarted() -> None:
    findings = [fail("port.foreign:DASHBOARD_PORT", "", ""),
                fail("service.dashboard", "", "", fix="fix.restart:dashboard"),
                fail("service.redis", "", "", fix="fix.restart:redis")]
    assert [step.fix for step in fixes.plan(findings)] == ["fix.restart:redis"]


def test_a_service_whose_dependency_a_restart_cannot_help_is_not_restarted() -> None:
    findings = [fail("service.redis", "", "rdb_last_bgsave_status:err"),  # no fix: a full disk
                fail("service.ml_engine", "", "", fix="fix.restart:ml_engine"),
                fail("service.prometheus", "", "", fix="fix.restart:prometheus")]
    assert [step.fix for step in fixes.plan(findings)] == ["fix.restart:prometheus"]
