"""sr-platform: PostgreSQL storage, loading and Dagster orchestration for S/R events.

`from sr_platform import read_events, read_levels, read_features, iter_events`: the read API
(sr_platform.read, docs/reading.md), imported on first use so `import sr_platform` stays light.
"""

_READ_API = ("read_events", "read_levels", "read_features", "iter_events", "ReadError")
__all__ = list(_READ_API)


def __getattr__(name: str):
    if name in _READ_API:
        from . import read

        return getattr(read, name)
    raise AttributeError(f"module 'sr_platform' has no attribute {name!r}")
