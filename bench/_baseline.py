"""Load a git revision's event_files + validate (default: main) as a separate package, so a
benchmark or equivalence check can run the old and the new code side by side in one process."""

import importlib
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FILES = ("keys.py", "event_files.py", "validate.py")


def load(rev: str = "main", name: str = "_baseline_core"):
    """(event_files, validate) modules of `rev`, importable as `name`.event_files etc."""
    if name in sys.modules:
        pkg = sys.modules[name]
        return pkg.event_files, pkg.validate
    where = Path(tempfile.mkdtemp(prefix="sr-baseline-")) / name
    where.mkdir()
    (where / "__init__.py").write_text("")
    for f in FILES:
        text = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:sr_platform/core/{f}"],
                              check=True, capture_output=True, text=True).stdout
        (where / f).write_text(text)
    sys.path.insert(0, str(where.parent))
    importlib.invalidate_caches()
    ef = importlib.import_module(f"{name}.event_files")
    va = importlib.import_module(f"{name}.validate")
    return ef, va
