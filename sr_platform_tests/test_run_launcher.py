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
