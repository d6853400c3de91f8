"""The web page (``run --http``), in a real headless browser: Debian's Chromium driven by
Playwright, against the real daemon as a subprocess.

It loads, shows each asset of a small pipeline in its state, updates live when a file lands
(server-sent events, no reload), shows ``why`` for an asset on click, and draws a graph of
1,000 assets within 3 seconds.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from daemon_process import DaemonProcess

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on PATH (.ci/run installs Debian's chromium)"
)

# Flags the probe of this machine needed: no sandbox as root, and nothing that reaches out.
_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=_FLAGS, headless=True)
        yield launched
        launched.close()


def _serve(project: Path, daemons: list[object], definitions: str = "defs.py") -> tuple[Any, str]:
    daemon = DaemonProcess(
        project,
        project / definitions,
        project / "state",
        args=("--settle", "0.2", "--grace", "10", "--http", "127.0.0.1:0"),
    )
    daemons.append(daemon)
    daemon.start()
    line = daemon.wait_event("http_listening")
    daemon.wait_notify("READY=1", timeout=60)
    return daemon, f"http://{line['address']}/"


def _state(page: Any, key: str) -> str:
    return str(page.get_attribute(f'.node[data-key="{key}"]', "data-state"))


def test_the_page_shows_states_updates_live_and_explains(
    owner_project: Path, daemons: list[object], browser: Any, tmp_path: Path
) -> None:
    daemon, url = _serve(owner_project, daemons)
    since = daemon.mark()
    (owner_project / "inbox" / "a.csv").write_text("x,y\n1,2\n")
    daemon.wait_event("materialized", asset="parsed", partition="a", since=since)
    page = browser.new_page(viewport={"width": 1400, "height": 800})
    page.goto(url)
    page.wait_for_selector('.node[data-key="stamp_reader"]', timeout=10_000)
    assert _state(page, "parsed") == "fresh"
    assert _state(page, "stamp") == "missing"  # manual: never asked for
    assert _state(page, "files") == "fresh"
    page.wait_for_selector("#live:not(.off)", timeout=10_000)
    # a file lands: the page hears of it over the event stream and redraws, with no reload
    (owner_project / "inbox" / "b.csv").write_text("x,y\n3,4\n")
    page.wait_for_function(
        """() => {
            const t = document.querySelector('.node[data-key="parsed"] title');
            return t && t.textContent.includes('2 fresh');
        }""",
        timeout=15_000,
    )
    page.click('.node[data-key="stamp"]')
    page.wait_for_selector("#why li", timeout=10_000)
    lines = page.locator("#why li").all_inner_texts()
    assert lines[0] == "stamp is missing"
    assert any("manual policy: runs only when asked" in line for line in lines)
    page.click('.node[data-key="parsed"]')
    page.wait_for_selector('#parts li[data-partition="b"]', timeout=10_000)
    page.click('#parts li[data-partition="a"]')
    page.wait_for_function(
        "() => document.querySelector('#why li')?.textContent === 'parsed[a] is fresh'",
        timeout=10_000,
    )
    page.screenshot(path=str(tmp_path / "page.png"))


def test_a_failed_blocking_check_shows_on_its_asset(
    tmp_path: Path, daemons: list[object], browser: Any
) -> None:
    """The checked asset is fresh, but its readers wait: the page draws it as failed, says
    "check failed", and clears it when a new value passes."""
    shutil.copy(Path(__file__).parent / "resources" / "checked_project.py", tmp_path / "defs.py")
    (tmp_path / "raw.json").write_text("[]")
    daemon, url = _serve(tmp_path, daemons)
    daemon.wait_event("check_failed", check="not_empty")
    page = browser.new_page(viewport={"width": 1400, "height": 800})
    page.goto(url)
    page.wait_for_selector('.node[data-key="rows"]', timeout=10_000)
    assert _state(page, "rows") == "failed"
    assert "1 check failed" in str(page.text_content('.node[data-key="rows"] text.sub'))
    assert _state(page, "total") == "missing"
    (tmp_path / "raw.json").write_text("[1]")
    page.wait_for_function(
        """() => document.querySelector('.node[data-key="rows"]')?.dataset.state === 'fresh'""",
        timeout=15_000,
    )


def test_a_graph_of_1000_assets_draws_within_3_seconds(
    tmp_path: Path, daemons: list[object], browser: Any
) -> None:
    (tmp_path / "big.py").write_text(
        "import headwater as hw\n"
        "nodes = []\n"
        "for c in range(50):\n"
        "    up = f'src{c}'\n"
        "    nodes.append(hw.source(up))\n"
        "    for i in range(20):\n"
        "        key = f'chain{c}/step{i}'\n"
        "        nodes.append(hw.asset(key, ins={'x': up}, group=f'chain{c % 10}',\n"
        "                              code_version='1')(lambda x: x))\n"
        "        up = key\n"
        "defs = hw.Definitions(nodes, executor='threads')\n"
    )
    _, url = _serve(tmp_path, daemons, "big.py")
    page = browser.new_page(viewport={"width": 1400, "height": 800})
    started = time.monotonic()
    page.goto(url)
    page.wait_for_function(
        "() => document.querySelectorAll('.node').length === 1050", timeout=10_000
    )
    elapsed = time.monotonic() - started
    assert elapsed < 3.0, f"1,000 assets took {elapsed:.2f}s to draw"
    page.fill("#search", "chain7/step19")
    page.press("#search", "Enter")
    page.wait_for_selector("#panel-title", timeout=10_000)
    assert page.inner_text("#panel-title") == "chain7/step19"
    assert page.locator(".node.match").count() == 1
    page.check("#collapse")
    page.fill("#search", "")
    groups = page.locator('.node[data-key^="group "]').count()
    assert groups == 10  # 1,000 assets folded into their 10 groups, the 50 sources beside them
    assert page.locator(".node").count() == 60
