"""One backup cycle, the same from every face (`sr-platform backup`, the Dagster asset and its
nightly schedule): clean up what killed runs left, take a logical backup (and a physical base
backup on the local cluster), prove the logical one by a restore, rotate both kinds and trim
the WAL archive to what the oldest kept base backup needs."""

from dataclasses import dataclass, field
from pathlib import Path

from . import backup, settings


@dataclass
class Cycle:
    logical: backup.Backup
    base: object | None = None  # pitr.BaseBackup on the local cluster
    verification: dict | None = None  # None: not verified (verify=False)
    cleaned: list[str] = field(default_factory=list)  # leftovers of killed runs removed
    rotated_logical: list[str] = field(default_factory=list)
    rotated_base: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.verification is None or bool(self.verification["ok"])


def run(url: str | None = None, root: Path | None = None, verify: bool = True,
        rotate: bool = True, include_dagster: bool = True,
        dagster_url: str | None = None) -> Cycle:
    """`dagster_url`: Dagster's storage (SR_PLATFORM_DAGSTER_STORAGE_URL), else found on the
    platform's server (see backup.take_backup)."""
    from . import pitr  # pitr imports backup

    root = Path(root or settings.backup_dir()).resolve()
    local = not settings.external_database_url()
    with backup.locked(root):
        cleaned = backup.cleanup(url, root)
        c = Cycle(backup.take_backup(url, root=root, include_dagster=include_dagster,
                                   dagster_url=dagster_url),
                  cleaned=cleaned)
        if local:
            c.base = pitr.take_base_backup(root=root)
        if verify:
            c.verification = backup.verify(c.logical.id, url, root=root)
        if rotate:
            c.rotated_logical = backup.rotate(root)
            if local:
                c.rotated_base = pitr.rotate_base_backups(root)
    return c
