"""Resources of the events domain."""

from pathlib import Path

import dagster as dg

from ..core import settings


class LandingZone(dg.ConfigurableResource):
    """Where event files arrive (SR_PLATFORM_LANDING_DIR, default data/landing)."""

    path: str | None = None

    def directory(self) -> Path:
        return Path(self.path).resolve() if self.path else settings.landing_dir()
