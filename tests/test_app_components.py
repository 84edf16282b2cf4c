"""The app components' browser code: static files read at import, shared by both components,
no test-only code in them. (tests/test_browser.py runs it in a real browser.)"""

from __future__ import annotations

import re
from importlib import resources

from fractalmidi.web import app_components
from fractalmidi.web.app_components import HEAD, FractalView, PianoRoll

STATIC = resources.files(app_components.__package__) / "static"  # beside the module
COMPONENT_JS = {"piano_roll.js": app_components._ROLL_JS, "fractal_view.js": app_components._VIEW_JS}


def test_static_files_are_the_components_code():
    for name, js in COMPONENT_JS.items():
        assert js == (STATIC / name).read_text(encoding="utf-8") and "window.fractalmidi" in js
    roll, view = PianoRoll(render=False), FractalView(render=False)
    assert roll.js_on_load == app_components._ROLL_JS and view.js_on_load == app_components._VIEW_JS
    # gradio finds a custom event by its name in js_on_load: the app listens to both
    assert callable(roll.bars_selected) and callable(roll.curve_drawn)


def test_shared_code_and_css_come_once_through_one_head():
    """Both components carry the same single inline script (gradio runs an inline head script
    once per page), holding common.js and the CSS; no component has CSS of its own."""
    roll, view = PianoRoll(render=False), FractalView(render=False)
    assert roll.head == view.head == HEAD
    assert HEAD.startswith("<script>") and HEAD.endswith("</script>") and HEAD.count("</script") == 1
    assert (STATIC / "common.js").read_text(encoding="utf-8") in HEAD
    css = (STATIC / "components.css").read_text(encoding="utf-8")
    assert HEAD.count(".fm-root {") == 1 and len(css) > 100 and "addStyle(" in HEAD
    assert roll.css_template == view.css_template == ""
    for component in (roll, view):  # the markup common.js's `parts` reads
        assert all(f'class="fm-{part}"' in component.html_template for part in ("head", "title", "info", "canvas"))


def test_component_code_has_no_test_hooks():
    """The components publish one documented API through window.fractalmidi.mount (common.js),
    nothing for tests alone: no properties hung on DOM elements, no mention of tests."""
    for name, js in COMPONENT_JS.items():
        assert not re.search(r"\btests?\b", js, re.IGNORECASE), name
        assert not re.search(r"\b(root|element|canvas)\.\w+\s*=[^=]", js), name
        assert js.count("fm.mount(") == 1, name
