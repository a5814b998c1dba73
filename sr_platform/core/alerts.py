"""Alerts: a line in the alert log, and a JSON POST to a webhook when one is configured.

The log is created 0600 and a directory it needs is created 0700: alert payloads name the
database's tables and figures."""

import json
import os
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from . import settings


def _private_dir(directory: Path) -> None:
    """Create `directory` (and missing parents) 0700 whatever the umask. A directory that
    exists is left as it is (it may be a shared one such as /tmp), except the platform's own
    state directory, which is made 0700."""
    missing = [d for d in (directory, *directory.parents) if not d.exists()]
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    for d in missing:
        d.chmod(0o700)
    if directory.resolve() == settings.state_dir():
        directory.chmod(0o700)


def write_line(record: dict, log: Path) -> Path:
    """Append `record` as one JSON line to the alert log (0600)."""
    _private_dir(log.parent)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the umask may have narrowed it; an older log may be wider
        os.write(fd, (json.dumps(record, default=str) + "\n").encode())
    finally:
        os.close(fd)
    return log


def send_alert(job: str, run_id: str, error: str, to: settings.Alerts,
               when: datetime | None = None, details: dict | None = None) -> dict:
    """Record one alert in `to.log`; POST it to `to.webhook` when that is set.
    `details` (e.g. the check, asset, partition and figures of a failed check) are added to
    the payload. A webhook that fails is noted in the log line, never raised: the alert itself
    is logged."""
    payload = {"job": job, "run_id": run_id, "error": error[:2000],
               "time": (when or datetime.now(UTC)).isoformat(), **(details or {})}
    delivered = None
    if to.webhook:
        req = urllib.request.Request(to.webhook, data=json.dumps(payload, default=str).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                delivered = resp.status
        except OSError as exc:
            delivered = f"failed: {exc}"
    write_line({**payload, "webhook": delivered}, to.log)
    return {**payload, "webhook": delivered}
