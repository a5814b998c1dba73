"""LocalRunLauncher's run worker health check, which run monitoring calls on STARTED runs:
real processes, a real instance configured with the launcher the project's dagster.yaml
names."""

import os
import subprocess
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from dagster._core.events import EngineEventData
from dagster._core.launcher import WorkerStatus
from dagster._core.test_utils import create_run_for_test, freeze_time

from sr_platform.run_launcher import LocalRunLauncher, process_started_at


@pytest.fixture
def instance():
    with dg.instance_for_test(overrides={"run_launcher": {
            "module": "sr_platform.run_launcher", "class": "LocalRunLauncher"}}) as inst:
        assert isinstance(inst.run_launcher, LocalRunLauncher)
        yield inst


def _worker_logged(instance: dg.DagsterInstance, pid: int):
    run = create_run_for_test(instance, job_name="load_events")
    # what the run worker logs when it starts (dagster/_grpc/impl.py)
    instance.report_engine_event(f"Started process for run (pid: {pid}).", run,
                                 EngineEventData.in_process(pid))
    return run


def test_a_live_worker_is_running(instance):
    run = _worker_logged(instance, os.getpid())
    assert instance.run_launcher.worker_pid(run)[0] == os.getpid()
    health = instance.run_launcher.check_run_worker_health(run)
    assert (health.status, health.msg) == (WorkerStatus.RUNNING,
                                           f"run worker process {os.getpid()} alive")


def test_a_dead_worker_has_failed(instance):
    proc = subprocess.Popen(["sleep", "60"])
    proc.kill()
    proc.wait()
    assert process_started_at(proc.pid) is None
    run = _worker_logged(instance, proc.pid)
    health = instance.run_launcher.check_run_worker_health(run)
    assert (health.status, health.msg) == (WorkerStatus.FAILED,
                                           f"run worker process {proc.pid} is gone")


def test_a_reused_pid_is_not_the_worker(instance):
    # the worker logged this pid an hour ago; the live process now holding it started since
    proc = subprocess.Popen(["sleep", "60"])
    try:
        with freeze_time(datetime.now(UTC) - timedelta(hours=1)):
            run = _worker_logged(instance, proc.pid)
        health = instance.run_launcher.check_run_worker_health(run)
        assert health.status == WorkerStatus.FAILED
        assert health.msg.startswith(f"run worker process {proc.pid} is gone (pid reused")
    finally:
        proc.kill()
        proc.wait()


def test_no_worker_logged_yet_is_left_to_the_start_timeout(instance):
    run = create_run_for_test(instance, job_name="load_events")
    health = instance.run_launcher.check_run_worker_health(run)
    assert (health.status, health.msg) == (WorkerStatus.RUNNING, "no run worker logged yet")


def test_landing_runs_start_warm_until_the_code_changes(instance, monkeypatch):
    """Runs of ingest_landing_files fork from the warm process (tagged), other jobs' runs and
    any run once the package's files changed go through the code server (DefaultRunLauncher)."""
    from dagster._core.launcher import LaunchRunContext
    from dagster._core.launcher.default_run_launcher import DefaultRunLauncher

    from sr_platform import run_launcher

    via_code_server, forked = [], []
    monkeypatch.setattr(DefaultRunLauncher, "launch_run",
                        lambda self, context: via_code_server.append(context.dagster_run.run_id))
    fingerprint = [("a.py", 1)]
    monkeypatch.setattr(run_launcher, "source_fingerprint", lambda: tuple(fingerprint))

    class Warm(run_launcher.WarmProcess):
        def __init__(self):  # no forkserver here: the dagster dev tests start a real one
            self.fingerprint = run_launcher.source_fingerprint()

        def start(self, run_id, instance_ref):
            forked.append(run_id)
            return 1

    monkeypatch.setattr(run_launcher, "WarmProcess", Warm)
    launcher = instance.run_launcher

    def launch(job_name: str) -> str:
        run = create_run_for_test(instance, job_name=job_name)
        launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
        return run.run_id

    landing = launch("ingest_landing_files")
    other = launch("load_events")
    assert (forked, via_code_server) == ([landing], [other])
    assert instance.get_run_by_id(landing).tags[run_launcher.WARM_TAG] == "true"
    assert run_launcher.WARM_TAG not in instance.get_run_by_id(other).tags
    fingerprint.append(("b.py", 2))  # an edit: the warm process holds older code
    stale = launch("ingest_landing_files")
    assert (forked, via_code_server) == ([landing], [other, stale])
    monkeypatch.setenv(run_launcher.WARM_ENV, "0")
    fingerprint.pop()
    off = launch("ingest_landing_files")
    assert (forked, via_code_server) == ([landing], [other, stale, off])
