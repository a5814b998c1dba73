"""Resources of the operations domain."""

from pathlib import Path

import dagster as dg

from ..core import backup


class BackupStore(dg.ConfigurableResource):
    """Where backups and retention archives go (SR_PLATFORM_BACKUP_DIR, default backups/)."""

    path: str | None = None

    def directory(self) -> Path:
        return Path(self.path).resolve() if self.path else backup.backup_dir()
