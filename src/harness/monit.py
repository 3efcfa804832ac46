"""The Monit baseline of the recovery benchmark: Monit 5.33 with `set daemon 1` in the
foreground under a prompt-reaping subreaper, supervising one daemonized redis-server with
the project's redis.conf, and a TERM-then-KILL stop script."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import psutil

from harness.ports import free_ports
from harness.processes import end_process
from harness.redisping import answering_pid
from harness.runs import BenchmarkError
from harness.waiting import wait_for
from unistack.config import PROJECT_ROOT
from unistack.configkeys import LOOPBACK

MONIT_START_TIMEOUT = 2  # `start program ... with timeout 2 seconds`: Monit's start grace
MONIT_SETTLE = MONIT_START_TIMEOUT + 1.0  # Monit tests nothing while uptime < the grace
START_LIMIT = 60.0  # Monit's redis answering by then
WAIT = 0.01  # seconds between two checks while waiting for it

STOP_SCRIPT = """#!/bin/sh
# Monit's stop program: TERM, then KILL if the process is stopped (state T) or is
# still alive after 2 s. Monit 5.33 itself never escalates to SIGKILL.
pid=$(cat "$1" 2>/dev/null) || exit 0
kill -s TERM "$pid" 2>/dev/null || exit 0
i=0
while kill -0 "$pid" 2>/dev/null; do
    if grep -q '^State:[[:space:]]*T' /proc/"$pid"/status 2>/dev/null || [ $i -ge 20 ]; then
        kill -s KILL "$pid" 2>/dev/null
        exit 0
    fi
    sleep 0.1
    i=$((i + 1))
done
"""

# Runs monit as its child under PR_SET_CHILD_SUBREAPER and reaps every orphan at once,
# as systemd would: the daemonized redis is a grandchild, and a zombie blocks Monit.
SUBREAPER = """
import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
monit = os.posix_spawn(sys.argv[1], sys.argv[1:], dict(os.environ))
signal.signal(signal.SIGTERM, lambda signum, frame: os.kill(monit, signal.SIGTERM))
while True:
    try:
        os.wait()
    except ChildProcessError:
        break
"""


def monit_files(directory: Path, port: int) -> Path:
    """redis.conf, the stop script and the monitrc (0600) of a Monit-supervised Redis."""
    directory.mkdir(mode=0o700)
    conf, pidfile, stop = directory / "redis.conf", directory / "redis.pid", directory / "stop.sh"
    conf.write_text(f'include "{PROJECT_ROOT / "redis.conf"}"\n'
                    f"bind {LOOPBACK}\nport {port}\ndaemonize yes\npidfile {pidfile}\n"
                    f"logfile {directory / 'redis.log'}\ndir {directory}\n")
    stop.write_text(STOP_SCRIPT)
    stop.chmod(0o700)
    rc = directory / "monitrc"
    rc.write_text(
        f"set daemon 1\nset logfile {directory / 'monit.log'}\n"
        f"set pidfile {directory / 'monit.pid'}\nset idfile {directory / 'monit.id'}\n"
        f"set statefile {directory / 'monit.state'}\n\n"
        f"check process bench-redis with pidfile {pidfile}\n"
        f'  start program = "/usr/bin/redis-server {conf}" '
        f"with timeout {MONIT_START_TIMEOUT} seconds\n"
        f'  stop program = "{stop} {pidfile}"\n'
        f"  if failed host {LOOPBACK} port {port} protocol redis with timeout 1 seconds "
        "then restart\n")
    rc.chmod(0o600)
    return rc


@dataclass
class MonitRun:
    """Monit in the foreground (`-I`) under the subreaper, supervising one Redis."""

    directory: Path
    port: int
    wrapper: subprocess.Popen[bytes]

    @classmethod
    def start(cls, monit: str, directory: Path) -> MonitRun:
        [port] = free_ports(1)
        rc = monit_files(directory, port)
        checked = subprocess.run([monit, "-t", "-c", str(rc)], capture_output=True, text=True,
                                 check=False)
        if checked.returncode != 0:
            raise BenchmarkError(f"monit -t rejected {rc}: {checked.stderr.strip()}")
        with (directory / "monit.out").open("wb") as out:
            wrapper = subprocess.Popen([sys.executable, "-c", SUBREAPER, monit, "-c", str(rc),
                                        "-I"], stdin=subprocess.DEVNULL, stdout=out,
                                       stderr=subprocess.STDOUT)
        run = cls(directory, port, wrapper)
        wait_for(lambda: answering_pid(port, ""), START_LIMIT, WAIT, "redis started by Monit")
        return run

    def monit_pid(self) -> int:
        children = psutil.Process(self.wrapper.pid).children()
        return next(c.pid for c in children if c.name() == "monit")

    def stop(self) -> None:
        """Monit first (so that it restarts nothing), then its Redis; the subreaper ends."""
        with contextlib.suppress(psutil.Error, StopIteration):
            psutil.Process(self.monit_pid()).terminate()
        with contextlib.suppress(OSError, ValueError):
            end_process(int((self.directory / "redis.pid").read_text()))
        self.wrapper.wait(timeout=30)
