"""Text columns as pyarrow string arrays, read and built at the buffer level (the fast
validation path and the id and timestamp writers)."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


def arrow_text(s: pd.Series) -> pa.Array | None:
    """The column as one pyarrow string array when pandas keeps it as Arrow text, else None."""
    arr = s.array
    if not isinstance(arr, pd.arrays.ArrowStringArray):
        return None
    out = arr.__arrow_array__()
    if isinstance(out, pa.ChunkedArray):
        out = out.combine_chunks()
    return out.cast(pa.string()) if out.type != pa.string() else out


def matches(arr: pa.Array, pattern: str) -> np.ndarray:
    """A boolean mask: the values matching `pattern` (RE2); nulls do not."""
    return pc.match_substring_regex(arr, pattern).fill_null(False).to_numpy(zero_copy_only=False)


def fixed_width_text(data: np.ndarray) -> pa.Array:
    """An (n, w) uint8 matrix of ASCII as an n-row string array (no copy)."""
    n, w = data.shape
    offsets = np.arange(0, (n + 1) * w, w, dtype=np.int32) if n else np.zeros(1, np.int32)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets),
                                                  pa.py_buffer(np.ascontiguousarray(data))])


def string_buffers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start, end, bytes) of a string array's values."""
    _, offsets, data = arr.buffers()
    offs = np.frombuffer(offsets, np.int32)[arr.offset:arr.offset + len(arr) + 1].astype(np.int64)
    raw = np.frombuffer(data, np.uint8) if data is not None else np.zeros(1, np.uint8)
    return offs[:-1], offs[1:], raw


def empty_text(n: int) -> pa.Array:
    """n empty strings."""
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(np.zeros(n + 1, np.int32)),
                                                  pa.py_buffer(b"")])
