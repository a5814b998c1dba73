"""Dagster 1.13's `dg` CLI runs on this project (pyproject's [tool.dg]) through
`sr-platform dg`, which gives it the environment `make run` gives Dagster: `dg check defs`
validates, `dg list defs` lists exactly the Definitions the UI loads."""

import json
import os
import subprocess

from sr_platform.definitions import defs


def _dg(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(["sr-platform", "dg", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300, env=dict(os.environ))


def test_dg_check_and_list_defs(server_url, tmp_path):
    check = _dg("check", "defs", cwd=tmp_path)  # from any directory: it runs in the project
    assert check.returncode == 0, check.stdout[-2000:] + check.stderr[-2000:]
    assert "All definitions loaded successfully." in check.stdout + check.stderr
    listed = _dg("list", "defs", "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr[-2000:]
    out = json.loads(listed.stdout)
    repo = defs.get_repository_def()
    assert {a["asset_key"] for a in out["assets"]} == {
        k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert {s["name"] for s in out["sensors"]} == {s.name for s in repo.sensor_defs}
    assert {s["name"] for s in out["schedules"]} == {s.name for s in repo.schedule_defs}
    assert {j["name"] for j in out["jobs"]} == {
        j.name for j in repo.get_all_jobs() if not j.name.startswith("__")}
