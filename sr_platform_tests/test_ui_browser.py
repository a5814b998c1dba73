"""The Dagster UI in a real browser: headless Chromium renders each asset group page of the
`sr_platform` code location, served by a real `dagster-webserver` over PostgreSQL storage."""

import os
import shutil
import signal
import subprocess
import time
import uuid
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote

import pytest

from .conftest import asset_groups

pytestmark = pytest.mark.slow  # a webserver and a headless Chromium: 50-60 s measured

LOCATION = "sr_platform"  # code location name; its repository is the implicit __repository__
CHROMIUM_TIMEOUT = 90  # seconds per chromium run
PAGE_DEADLINE = 180  # seconds to keep retrying a page that has not rendered the names yet
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
    "--virtual-time-budget=15000",
]


def chromium_binary() -> str | None:
    if Path("/usr/bin/chromium").exists():
        return "/usr/bin/chromium"
    return shutil.which("chromium")


class _RenderedText(HTMLParser):
    """Text nodes and title/tooltip attributes of a DOM dump, without script and style."""

    def __init__(self):
        super().__init__()
        self.texts: set[str] = set()
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self._skip += 1
        for name, value in attrs:
            if name in ("title", "data-tooltip") and value:
                self.texts.add(value.strip())

    def handle_endtag(self, tag):
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip and data.strip():
            self.texts.add(data.strip())


def rendered_texts(dom: str) -> set[str]:
    parser = _RenderedText()
    parser.feed(dom)
    return parser.texts


def name_rendered(path: list[str], texts: set[str]) -> bool:
    """The UI shows an asset key as its path joined with " / " (one component: the name)."""
    return bool({" / ".join(path), "/".join(path), path[-1]} & texts)


def run_chromium(binary: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """One headless chromium run with a fresh profile; the whole process group dies on timeout."""
    profile = tmp_path / f"chromium-profile-{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=CHROMIUM_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        err += f"\n[chromium killed after {CHROMIUM_TIMEOUT}s]"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # stray renderer/zygote children, if any
        except ProcessLookupError:
            pass
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def dump_until_rendered(binary: str, tmp_path: Path, url: str,
                        paths: list[list[str]]) -> list[list[str]]:
    """Dump the rendered DOM of `url` (retrying while the UI is still loading); return the
    asset keys whose names are missing from the last dump."""
    deadline = time.monotonic() + PAGE_DEADLINE
    while True:
        # A tall window, so the (virtualized) asset list renders every row of a large group.
        result = run_chromium(binary, tmp_path, "--window-size=1600,8000", "--dump-dom", url)
        texts = rendered_texts(result.stdout)
        missing = [p for p in paths if not name_rendered(p, texts)]
        if not missing or time.monotonic() > deadline:
            (tmp_path / f"dom-{uuid.uuid4().hex[:8]}.html").write_text(result.stdout)
            if missing:
                print(f"chromium rc={result.returncode}; stderr tail:\n{result.stderr[-2000:]}")
                print(f"rendered text sample: {sorted(texts)[:80]}")
            return missing
        time.sleep(2)


def screenshot(binary: str, tmp_path: Path, url: str, name: str) -> Path:
    png = tmp_path / name
    deadline = time.monotonic() + PAGE_DEADLINE
    while True:
        result = run_chromium(binary, tmp_path, f"--screenshot={png}",
                              "--window-size=1600,1000", url)
        if (png.exists() and png.stat().st_size > 10_000) or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert png.exists(), f"no screenshot of {url}: {result.stderr[-2000:]}"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{png} is not a PNG"
    assert png.stat().st_size > 10_000, f"{png} is only {png.stat().st_size} bytes"
    return png


def test_asset_group_pages_render_asset_names(request):
    binary = chromium_binary()
    if binary is None:
        pytest.skip("chromium is not installed (no /usr/bin/chromium); install it with "
                    "`apt-get install chromium` to run the browser UI test")
    # Only now start the webserver (and its databases): a skip above costs nothing.
    port, _, tmp_path = request.getfixturevalue("webserver")
    groups = asset_groups(port)
    base = f"http://127.0.0.1:{port}/locations/{LOCATION}/asset-groups"
    for group, paths in sorted(groups.items()):
        lineage_url = f"{base}/{quote(group, safe='')}"
        list_url = f"{lineage_url}/list"
        for url in (list_url, lineage_url):
            missing = dump_until_rendered(binary, tmp_path, url, paths)
            assert not missing, (f"asset group page {url} does not show "
                                 f"{[' / '.join(p) for p in missing]}; DOM dumps are under "
                                 f"{tmp_path}")
        screenshot(binary, tmp_path, lineage_url, f"ui-{group}-lineage.png")
        screenshot(binary, tmp_path, list_url, f"ui-{group}-list.png")
