"""A real wheel (not the editable checkout) carries the SQL and the Alembic script directory,
leaves the tests out, and its `sr-platform db upgrade` migrates a database to head. Also the
other entry points of the repository: make targets and the `slow` marker."""

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from sr_platform.core import migrate, settings

ROOT = settings.PROJECT_ROOT
# What a developer's checkout holds besides the source: never part of a build.
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", ".sr_platform", "__pycache__", "*.egg-info",
                                    "build", "dist", "data", ".*_cache")


def _has_wheel_backend() -> bool:
    """setuptools >= 70.1 builds wheels itself; older ones need the `wheel` package."""
    try:
        major, minor = (int(x) for x in metadata.version("setuptools").split(".")[:2])
    except metadata.PackageNotFoundError:
        return False
    if (major, minor) >= (70, 1):
        return True
    try:
        metadata.version("wheel")
        return True
    except metadata.PackageNotFoundError:
        return False


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    if not _has_wheel_backend():
        pytest.skip("this venv's setuptools cannot build a wheel offline: `make install` "
                    "installs setuptools>=70.1 from the test extra")
    tmp = tmp_path_factory.mktemp("pkg")
    src = tmp / "src"
    # symlinks=True: build from sr_platform/sql -> ../sql exactly as the repository holds it
    shutil.copytree(ROOT, src, symlinks=True, ignore=NOT_SOURCE)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(tmp / "dist"), str(src)],
                   check=True, cwd=tmp)
    (whl,) = (tmp / "dist").glob("sr_platform-*.whl")
    return whl


def test_wheel_ships_sql_and_migrations_and_no_tests(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    repo_sql = {p.name for p in (ROOT / "sql").glob("*.sql")}
    assert len(repo_sql) >= 8  # 0001..0004 up and down at least
    assert {n.removeprefix("sr_platform/sql/") for n in names
            if n.startswith("sr_platform/sql/")} == repo_sql
    versions = "sr_platform/core/migrations/versions/"
    assert {n.removeprefix(versions) for n in names if n.startswith(versions)} == {
        p.name for p in (ROOT / "sr_platform/core/migrations/versions").glob("*.py")}
    assert {"sr_platform/core/migrations/script.py.mako",
            "sr_platform/core/migrations/env.py"} <= names
    assert [n for n in names if n.startswith("sr_platform_tests/")] == []
    assert [n for n in names if "__pycache__" in n] == []


def test_installed_wheel_upgrades_a_database_to_head(wheel, server_url, make_db, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q",
                    "--no-deps", str(wheel)], check=True)
    # The dependencies come from this venv, appended after the throwaway venv's own
    # site-packages (a .pth-added directory's own .pth files, such as the editable finder of
    # the checkout, are not executed), so `sr_platform` can only be the wheel's.
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_path("
                                "'purelib'))"], check=True, capture_output=True,
                               text=True).stdout.strip())
    deps = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (site / "_sr_test_deps.pth").write_text("\n".join(sorted(deps)) + "\n")

    url = make_db(server_url, migrated=False)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "SR_PLATFORM_SQL_DIR", "SR_PLATFORM_HOME")}
    env["SR_PLATFORM_DATABASE_URL"] = url
    cwd = tmp_path / "elsewhere"  # outside the repository: nothing may be found relative to cwd
    cwd.mkdir()

    probe = "import sr_platform.core.settings as s; print(s.__file__); print(s.sql_dir())"
    imported = subprocess.run([str(py), "-c", probe], env=env, cwd=cwd, check=True,
                              capture_output=True, text=True).stdout.split()
    assert imported == [str(site / "sr_platform" / "core" / "settings.py"),
                        str(site / "sr_platform" / "sql")]

    out = subprocess.run([str(venv / "bin" / "sr-platform"), "db", "upgrade"], env=env, cwd=cwd,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == f"at revision {migrate.head()}"
    assert migrate.current(url) == migrate.head()


def test_every_phony_make_target_exists_and_test_skips_only_slow():
    makefile = (ROOT / "Makefile").read_text()
    phony = set(re.search(r"^\.PHONY:(.*)$", makefile, re.M).group(1).split())
    defined = set(re.findall(r"^([A-Za-z0-9_-]+):", makefile, re.M))
    assert phony - defined == set()
    assert {"test", "test-slow", "test-all", "clean-db"} <= phony
    recipes = dict(re.findall(r"^([A-Za-z0-9_-]+):.*\n\t(.*)", makefile, re.M))
    assert recipes["test"].endswith('$(BIN)/pytest -m "not slow"')
    assert recipes["test-slow"].endswith("$(BIN)/pytest -m slow")
    assert recipes["test-all"].endswith("$(BIN)/pytest")  # everything
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-2:] == ["make test-slow", "make test"]  # CI runs both; the README's last


def test_slow_marker_is_registered(pytestconfig):
    assert [m for m in pytestconfig.getini("markers") if m.startswith("slow:")] == [
        "slow: takes more than 30 s (browser, webserver, big loads)"]
