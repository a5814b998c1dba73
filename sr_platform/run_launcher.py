"""The instance's run launcher: Dagster's DefaultRunLauncher plus a run worker health check.

The default launcher cannot tell run monitoring whether a run's worker still lives, so a run
whose worker died together with its code server (a machine restart, `kill -9` of `dagster
dev`) stays STARTED forever and is never retried. Run workers of this deployment run on the
daemon's machine (dagster dev, or daemon and code server side by side), so the check is local:
the worker's pid (Dagster logs it when the worker starts) must name a live process that
started no later than that log entry; a reused pid after a reboot started later.

Warm start (issue 16, section 4): the code server starts each run in a new Python process
(`spawn`), which imports Dagster and the code location before the run begins, ~2.5 s on a
quiet core and far more on a busy machine. Runs of WARM_JOBS (the landing run) are instead
forked from a warm process that imported them once (a multiprocessing forkserver with
`sr_platform.definitions` preloaded, started by the first such launch in the daemon, which
waits for it as it would for a spawned worker). A run is started that way only
while the package's source files are as they were when the warm process imported them: after
an edit (`dagster dev` reloads code locations), runs go through the code server again, so a run
never executes older code than the UI shows. A warm run is terminated with SIGINT (Dagster's
interrupt handling cancels it), its worker is health-checked like any other.
"""

import multiprocessing
import os
import re
import signal
import time
from pathlib import Path

from dagster import DagsterRun
from dagster._core.events import DagsterEventType
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus
from dagster._core.launcher.default_run_launcher import DefaultRunLauncher

WARM_JOBS = frozenset({"ingest_landing_files"})
WARM_TAG = "sr_platform/warm_start"  # set on runs forked from the warm process
PRELOAD = ["sr_platform.definitions"]
PACKAGE = Path(__file__).resolve().parent
WARM_ENV = "SR_PLATFORM_WARM_RUNS"  # "0": every run through the code server

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


def source_fingerprint() -> tuple:
    """The package's Python files and their modification times: a warm process that imported
    another fingerprint holds older code."""
    return tuple(sorted((str(p), p.stat().st_mtime_ns) for p in PACKAGE.rglob("*.py")))


def _warm_worker(run_id: str, instance_ref) -> None:
    """A run, in a process forked from the warm one: what `dagster api execute_run` does (it
    logs "Started process for run (pid: N)", which the health check reads)."""
    from dagster import DagsterInstance
    from dagster._cli.api import _execute_run_command_body
    from dagster._utils.interrupts import capture_interrupts

    with capture_interrupts(), DagsterInstance.from_ref(instance_ref) as instance:
        _execute_run_command_body(run_id, instance, lambda _event: None,
                                  set_exit_code_on_failure=False)


class WarmProcess:
    """The forkserver runs are forked from, with the code location imported (once: started by
    the first warm run's launch, which waits for it as it would for a spawned worker)."""

    def __init__(self) -> None:
        from multiprocessing import forkserver

        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(PRELOAD)
        self.fingerprint = source_fingerprint()
        forkserver.ensure_running()

    def fresh(self) -> bool:
        return source_fingerprint() == self.fingerprint

    def start(self, run_id: str, instance_ref) -> int:
        proc = self.context.Process(target=_warm_worker, args=(run_id, instance_ref),
                                    name=f"run {run_id}")
        proc.start()
        return proc.pid


class LocalRunLauncher(DefaultRunLauncher):
    """DefaultRunLauncher whose run workers run monitoring can health-check, and whose landing
    runs start warm (see module)."""

    _warm: WarmProcess | None = None

    def launch_run(self, context) -> None:
        run = context.dagster_run
        if run.job_name in WARM_JOBS and os.environ.get(WARM_ENV, "1") != "0":
            if self._warm is None:
                self._warm = WarmProcess()
            if self._warm.fresh():
                self._instance.add_run_tags(run.run_id, {WARM_TAG: "true"})
                self._warm.start(run.run_id, self._instance.get_ref())
                return
        super().launch_run(context)

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id) if self.has_instance else None
        if run is None or run.tags.get(WARM_TAG) != "true":
            return super().terminate(run_id)
        if run.is_finished:
            return False
        self._instance.report_run_canceling(run)
        worker = self.worker_pid(run)
        if worker is None or process_started_at(worker[0]) is None:
            return False
        os.kill(worker[0], signal.SIGINT)
        return True

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
