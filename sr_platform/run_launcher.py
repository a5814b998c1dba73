"""The instance's run launcher: Dagster's DefaultRunLauncher plus a run worker health check.

The default launcher cannot tell run monitoring whether a run's worker still lives, so a run
whose worker died together with its code server (a machine restart, `kill -9` of `dagster
dev`) stays STARTED forever and is never retried. Run workers of this deployment run on the
daemon's machine (dagster dev, or daemon and code server side by side), so the check is local:
the worker's pid (Dagster logs it when the worker starts) must name a live process that
started no later than that log entry; a reused pid after a reboot started later.
"""

import os
import re
import time
from pathlib import Path

from dagster import DagsterRun
from dagster._core.events import DagsterEventType
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus
from dagster._core.launcher.default_run_launcher import DefaultRunLauncher

_STARTED = re.compile(r"Started process for run \(pid: (\d+)\)")
PID_REUSE_SLACK_SECONDS = 5.0  # the worker logs its pid a moment after it starts


def _boot_time() -> float | None:
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except OSError:
        pass
    return None


def process_started_at(pid: int) -> float | None:
    """Unix time the live process `pid` started; None if there is no such live process (a
    zombie is dead: it only waits to be reaped). Without /proc, any existing pid counts as
    started at 0."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return 0.0
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
    if fields[0] in ("Z", "X"):
        return None
    boot = _boot_time()
    if boot is None:
        return 0.0
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime in ticks


class LocalRunLauncher(DefaultRunLauncher):
    """DefaultRunLauncher whose run workers run monitoring can health-check (see module)."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def worker_pid(self, run: DagsterRun) -> tuple[int, float] | None:
        """(pid, time logged) of the run's latest worker, from its engine events."""
        found = None
        for record in self._instance.get_records_for_run(
                run.run_id, of_type=DagsterEventType.ENGINE_EVENT).records:
            event = record.event_log_entry.dagster_event
            m = _STARTED.search(event.message or "") if event else None
            if m:
                found = (int(m.group(1)), record.event_log_entry.timestamp)
        return found

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        worker = self.worker_pid(run)
        if worker is None:
            # not ours to judge (no worker logged yet): start_timeout_seconds covers launches
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no run worker logged yet")
        pid, logged_at = worker
        started = process_started_at(pid)
        if started is None:
            return CheckRunHealthResult(WorkerStatus.FAILED,
                                        f"run worker process {pid} is gone")
        if started > logged_at + PID_REUSE_SLACK_SECONDS:
            return CheckRunHealthResult(
                WorkerStatus.FAILED,
                f"run worker process {pid} is gone (pid reused by a process started "
                f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(started))} UTC)")
        return CheckRunHealthResult(WorkerStatus.RUNNING, f"run worker process {pid} alive")
