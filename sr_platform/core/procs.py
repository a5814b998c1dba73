"""Child processes (pg_dump, pg_restore, pg_basebackup, ...) that die with the platform and
write only private files, and private files and directories of our own.

A child is started under `setpriv --pdeathsig KILL`: the kernel kills it when the process that
started it dies, kill -9 included, so no orphaned pg_dump finishes a dump nobody will list.
(A process group would not do: kill -9 of the parent alone leaves its group running.) Its
umask is 077, so what it writes is readable by our user only.
"""

import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

_SETPRIV = shutil.which("setpriv")


def run(args: list[str], env: Mapping[str, str] | None = None,
        **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run(args) with text output captured, `env` added to our environment, the
    child killed if we die, and umask 077."""
    prefix = [_SETPRIV, "--pdeathsig", "KILL", "--"] if _SETPRIV else []
    return subprocess.run(prefix + list(args), capture_output=True, text=True, umask=0o077,
                          env={**os.environ, **(env or {})}, **kwargs)


def private_dir(path: Path) -> Path:
    """Create `path` (and missing parents) as 0700, and make `path` itself 0700 if it already
    existed looser: everything below it stays private even under a world-readable parent."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)
    return path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` atomically (a temporary file fsynced, then renamed over it),
    mode 0600."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
