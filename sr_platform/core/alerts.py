"""Alerts: a line in the alert log, and a JSON POST to a webhook when one is configured."""

import json
import os
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from . import settings


def alert_log() -> Path:
    return Path(os.environ.get("SR_PLATFORM_ALERT_LOG")
                or settings.state_dir() / "alerts.log")


def send_alert(job: str, run_id: str, error: str, when: datetime | None = None,
               webhook: str | None = None, log: Path | None = None) -> dict:
    """Record one alert; POST it when `webhook` (default SR_PLATFORM_ALERT_WEBHOOK) is set.
    A webhook that fails is noted in the log line, never raised: the alert itself is logged."""
    payload = {"job": job, "run_id": run_id, "error": error[:2000],
               "time": (when or datetime.now(UTC)).isoformat()}
    webhook = webhook or os.environ.get("SR_PLATFORM_ALERT_WEBHOOK") or None
    delivered = None
    if webhook:
        req = urllib.request.Request(webhook, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                delivered = resp.status
        except OSError as exc:
            delivered = f"failed: {exc}"
    log = log or alert_log()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as fh:
        fh.write(json.dumps({**payload, "webhook": delivered}) + "\n")
    return {**payload, "webhook": delivered}
