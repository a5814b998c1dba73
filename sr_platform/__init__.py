"""sr-platform: PostgreSQL storage, loading and Dagster orchestration for S/R events.

`from sr_platform import read_events, read_levels, read_features, iter_events`: the read API
(sr_platform.read, docs/reading.md), imported on first use so `import sr_platform` stays light.
`from sr_platform import subscribe`: committed changes as they happen (docs/realtime.md).
"""

_READ_API = ("read_events", "read_levels", "read_features", "iter_events", "ReadError")
_CHANGES_API = ("subscribe", "Change", "ChangesPruned")
__all__ = list(_READ_API) + list(_CHANGES_API)


def __getattr__(name: str):
    if name in _READ_API:
        from . import read

        return getattr(read, name)
    if name in _CHANGES_API:
        from .core import changes

        return getattr(changes, name)
    raise AttributeError(f"module 'sr_platform' has no attribute {name!r}")
