"""End to end in a real browser: Debian's headless Chromium driven by Playwright's Python API
(never `playwright install`). Load the page, generate, drag over bars 5-8 of the piano roll,
regenerate them, check that every note outside them is unchanged, draw a density curve,
download the MIDI. Screenshots go to tests/artifacts/ (or $FRACTALMIDI_TEST_ARTIFACTS).

Needs: `apt-get install -y chromium` and `pip install playwright==1.65.2`; missing either is a
failure that says so, never a skip.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from fractalmidi import read_midi
from test_app import ROOT, make_test_model, outside, served_app

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
ARTIFACTS = Path(os.environ.get("FRACTALMIDI_TEST_ARTIFACTS", ROOT / "tests" / "artifacts"))
# The components' debug surface (fractalmidi/static/common.js): value(), and where a bar is.
ROLL = "window.fractalmidi.get('#piano_roll')"
# How long to wait for the page to reach each state, in ms: a liveness bound, not a speed
# requirement. The waits poll and return as soon as the state is reached; on a shared, busy
# machine Chromium, the served app and its tiny model can be many times slower than alone.
WAIT_MS = 120_000


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser_app")
    with served_app(make_test_model(tmp / "tiny"), tmp) as (url, _):
        yield url


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"Chromium is missing at {CHROMIUM}: install it with `apt-get update && apt-get install -y chromium` "
                    "(Debian's package; never `playwright install`).")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright's Python API is missing: `pip install playwright==1.65.2` (requirements-dev.txt).")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def roll_value(page) -> dict:
    return page.evaluate(f"() => {ROLL}.value()")


def bar_point(page, bar: int, lane: str = "roll", frac: float = 0.5) -> tuple[float, float]:
    """Page coordinates of the middle of `bar` (0-based) in a lane of the roll."""
    p = page.evaluate(f"([bar, lane, frac]) => {ROLL}.point(bar, lane, frac)", [bar, lane, frac])
    return p["x"], p["y"]


def test_generate_select_regenerate_download(url, browser):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1400}, accept_downloads=True)
    page.set_default_timeout(WAIT_MS)  # goto, click, fill, evaluate, ... (Playwright's default: 30 s)
    page_errors: list[str] = []
    console_errors: list[str] = []
    page.on("pageerror", lambda e: page_errors.append(str(e)))
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)

    # load the page
    page.goto(url)
    page.wait_for_function(f"() => window.fractalmidi && {ROLL}", timeout=WAIT_MS)
    # the components' shared script (code and CSS; each run adds the style) reaches the page once
    assert page.evaluate("() => document.querySelectorAll('style#fractalmidi-css').length") == 1
    page.screenshot(path=ARTIFACTS / "1_loaded.png", full_page=True)

    # generate 16 bars
    page.click("#generate_btn")
    page.wait_for_function(f"() => {{ const v = {ROLL}.value(); return v && v.notes && v.notes.length > 0; }}", timeout=WAIT_MS)
    page.wait_for_function("() => window.fractalmidi.get('#fractal_view').value().stage === 'done'", timeout=WAIT_MS)
    first = roll_value(page)
    assert len(first["bar_starts"]) == 17 and first["title"].startswith("Generated")
    page.screenshot(path=ARTIFACTS / "2_generated.png", full_page=True)

    # drag over bars 5-8 on the roll: the selection reaches the box as "5-8"
    (x0, y), (x1, _) = bar_point(page, 4), bar_point(page, 7)
    page.mouse.move(x0, y)
    page.mouse.down()
    page.mouse.move(x1, y + 40, steps=10)
    page.mouse.up()
    page.wait_for_function("() => document.querySelector('#bars_text textarea, #bars_text input').value === '5-8'",
                           timeout=WAIT_MS)
    assert roll_value(page)["selection"] == [4, 8]
    page.screenshot(path=ARTIFACTS / "3_selected.png", full_page=True)

    # regenerate the selection with another seed
    page.fill("#seed input", "7")
    page.click("#inpaint_btn")
    page.wait_for_function(f"() => {{ const v = {ROLL}.value(); return v && v.generated && v.title.startsWith('Bars 5-8'); }}",
                           timeout=WAIT_MS)
    second = roll_value(page)
    page.screenshot(path=ARTIFACTS / "4_regenerated.png", full_page=True)
    a, b = np.asarray(first["notes"]).reshape(-1, 4), np.asarray(second["notes"]).reshape(-1, 4)
    start, stop = first["bar_starts"][4], first["bar_starts"][8]
    assert outside(b, start, stop) == outside(a, start, stop)  # nothing outside bars 5-8 moved
    assert set(map(tuple, b.tolist())) != set(map(tuple, a.tolist()))  # bars 5-8 are new
    assert second["generated"] == [[4, 8]] and second["selection"] == [4, 8]

    # draw a density curve over bars 1-4 in the density lane: it fills the density box
    (d0, ly), (d1, _) = bar_point(page, 0, "density"), bar_point(page, 3, "density")
    page.mouse.move(d0, ly)
    page.mouse.down()
    page.mouse.move(d1, ly - 15, steps=10)
    page.mouse.up()
    page.wait_for_function("() => document.querySelector('#density textarea, #density input').value.split(',').length === 16",
                           timeout=WAIT_MS)
    density = page.input_value("#density textarea, #density input").split(",")
    assert all(density[:4]) and not any(density[4:])
    page.screenshot(path=ARTIFACTS / "5_density_drawn.png", full_page=True)

    # download the MIDI: it holds exactly the notes on the roll
    with page.expect_download(timeout=WAIT_MS) as download:
        page.click("#midi_out a")
    saved = ARTIFACTS / download.value.suggested_filename
    download.value.save_as(saved)
    piece, _ = read_midi(saved)
    assert saved.suffix == ".mid" and "bars5-8" in saved.name
    assert set(map(tuple, piece.notes.tolist())) == set(map(tuple, b.tolist()))
    assert outside(piece.notes, start, stop) == outside(a, start, stop)

    assert not page_errors, page_errors
    # gr.HTML reports failures of the components' own code on the console
    assert not [e for e in console_errors if any(w in e for w in ("js_on_load", "watch callback", "evaluating template"))]
    page.close()
