"""Helpers for tests that drive a real `dagster dev` (webserver, daemon, code server) over
GraphQL: start it in its own process group on a free loopback port, launch runs, read runs and
sensor ticks, and stop the whole group."""

import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sr_platform.core import settings
from sr_platform.core.localpg import free_port

REPOSITORY = "__repository__"  # the implicit repository of a Definitions object


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        body = json.loads(resp.read())
    assert "errors" not in body, body
    return body["data"]


def stripped_environment(**extra: str) -> dict[str, str]:
    """os.environ without any SR_PLATFORM_* or DAGSTER_* variable, plus `extra`; the project
    stays importable (PYTHONPATH) and its tools on PATH."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SR_PLATFORM_", "DAGSTER_"))}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(settings.PROJECT_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.update(extra)
    return env


@dataclass(frozen=True)
class DevServer:
    port: int
    pgid: int  # dagster dev's process group: webserver, daemon, code server, run workers

    def crash(self) -> None:
        """Kill every process of the group at once, as a power cut would."""
        os.killpg(self.pgid, signal.SIGKILL)


@contextmanager
def dagster_dev(args: list[str], env: dict[str, str], cwd: Path,
                timeout: float = 180) -> Iterator[DevServer]:
    """`dagster dev ARGS` on a free port, once its code location has loaded. The log is
    cwd/dagster_dev.log (appended to); the whole process group is killed on exit."""
    port = free_port()
    with serve(["dagster", "dev", "-h", "127.0.0.1", "-p", str(port), *args], port, env, cwd,
               timeout) as dev:
        yield dev


@contextmanager
def sr_platform_dev(env: dict[str, str], cwd: Path, timeout: float = 600) -> Iterator[DevServer]:
    """`sr-platform dev` (what `make run` runs: cluster, migrations, sample, schema asset,
    then `dagster dev`) on a free port, once the UI's code location has loaded."""
    port = free_port()
    with serve(["sr-platform", "dev", "--host", "127.0.0.1", "--port", str(port)], port, env,
               cwd, timeout) as dev:
        yield dev


@contextmanager
def serve(argv: list[str], port: int, env: dict[str, str], cwd: Path,
          timeout: float = 180) -> Iterator[DevServer]:
    """Run `argv` (a `dagster dev` on `port`) in its own process group until its code location
    has loaded; log in cwd/dagster_dev.log (appended to); kill the whole group on exit."""
    log = cwd / "dagster_dev.log"
    with open(log, "a") as out:
        proc = subprocess.Popen(argv, env=env, cwd=cwd, start_new_session=True,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                entries = graphql(port, "{ workspaceOrError { ... on Workspace { "
                                        "locationEntries { locationOrLoadError { __typename } } }"
                                        " } }")["workspaceOrError"]["locationEntries"]
                if entries and all(e["locationOrLoadError"] for e in entries):
                    assert [e["locationOrLoadError"]["__typename"] for e in entries] == [
                        "RepositoryLocation"], log.read_text()[-3000:]
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{argv[0]} dev did not come up:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield DevServer(port, proc.pid)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(60)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        try:  # run workers and code servers left behind by a slow shutdown
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


LAUNCH = """
mutation($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message stack }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidSubsetError { message }
  }
}"""


def launch_assets(port: int, location: str, asset_paths: list[list[str]]) -> str:
    params = {
        "selector": {"repositoryLocationName": location, "repositoryName": REPOSITORY,
                     "jobName": "__ASSET_JOB",
                     "assetSelection": [{"path": p} for p in asset_paths]},
        "mode": "default",
        "executionMetadata": {"tags": []},
    }
    result = graphql(port, LAUNCH, {"params": params})["launchRun"]
    assert result["__typename"] == "LaunchRunSuccess", result
    return result["run"]["runId"]


def wait_for_run(port: int, run_id: str, timeout: float = 300) -> str:
    """The run's final status (SUCCESS, FAILURE, CANCELED)."""
    deadline = time.monotonic() + timeout
    while True:
        run = graphql(port, """query($id: ID!) { runOrError(runId: $id) {
            ... on Run { status } } }""", {"id": run_id})["runOrError"]
        if run["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
            return run["status"]
        assert time.monotonic() < deadline, f"run {run_id} still {run['status']}"
        time.sleep(1)


def run_messages(port: int, run_id: str) -> list[str]:
    data = graphql(port, """query($id: ID!) { logsForRun(runId: $id) {
        ... on EventConnection { events { ... on MessageEvent { message } } } } }""",
                   {"id": run_id})
    return [e.get("message", "") for e in data["logsForRun"]["events"]]


def sensor_ticks(port: int, location: str, sensor: str) -> list[dict]:
    """The sensor's ticks, newest first: status, skipReason, error message."""
    data = graphql(port, """query($s: SensorSelector!) { sensorOrError(sensorSelector: $s) {
        __typename
        ... on Sensor { sensorState { status ticks(limit: 10) {
            status skipReason error { message } } } } } }""",
                   {"s": {"repositoryLocationName": location, "repositoryName": REPOSITORY,
                          "sensorName": sensor}})["sensorOrError"]
    assert data["__typename"] == "Sensor", data
    assert data["sensorState"]["status"] == "RUNNING", data
    return data["sensorState"]["ticks"]


def wait_for_tick(port: int, location: str, sensor: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        ticks = [t for t in sensor_ticks(port, location, sensor) if t["status"] != "STARTED"]
        if ticks:
            return ticks[0]
        assert time.monotonic() < deadline, f"{sensor} has not ticked"
        time.sleep(1)
