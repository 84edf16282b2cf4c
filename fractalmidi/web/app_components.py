"""The app's two custom components, built on gradio 6's `gr.HTML` (html_template, js_on_load,
head), and the plain functions that make their values.

`PianoRoll`: notes over pitch and time (velocity as colour), bar lines and bar numbers, and the
structure curves under the roll on the same time axis: tempo (BPM) and density (onsets per
step, realised as bars, requested as a dashed line). Its value is a dict (see `roll_value`).
Dragging over the roll or the bar numbers selects whole bars, snapped to bar lines: the
JavaScript writes `value["selection"] = [first, stop]` (0-based, half-open; highlighted) and
fires the custom event `bars_selected` with {first, stop} as its data, so a Python listener
`roll.bars_selected(fn, ...)` whose `fn(evt: gr.EventData)` reads `evt.first`, `evt.stop`
receives it (the roll's value, with the selection, is also there as an input). Dragging in the
tempo or density lane draws a per-bar curve into `value["drawn"][...]` and fires
`curve_drawn` with {curve, values}.

`FractalView`: the hierarchy as it unfolds: Level 0 (tempo and density per bar), Level 1
(the 12 pitch classes per beat), Level 2 (the notes), and the condition-influence map
(where the conditional and unconditional note predictions differ). Its value is a dict (see
`FractalState.value`), replaced after every network pass while a generation streams.

Both draw on a <canvas> in `js_on_load` and redraw when Python sends a new value (`watch`).
Their browser code lives in `static/`, read at import: `piano_roll.js` and `fractal_view.js`
(each component's `js_on_load`), and what they share, `common.js` and `components.css`, which
reach the page once through `HEAD` (every component's gr.HTML `head`). `common.js` defines
`window.fractalmidi`, whose `get('#elem_id')` gives a component's `value()` and, for the roll,
the page coordinates of a bar in a lane (`point`): a debug surface for the browser console and
for browser automation (tests/test_browser.py).
"""

from __future__ import annotations

import base64
import json
from importlib import resources
from typing import Any

import numpy as np

import gradio as gr

from ..piece import Piece, roll_to_notes

# ----------------------------------------------------------------------------- values


def roll_value(
    piece: Piece | None,
    *,
    requested_density=None,
    selection: tuple[int, int] | None = None,
    generated: list[tuple[int, int]] | None = None,
    title: str = "",
) -> dict | None:
    """The `PianoRoll` value of a piece (None: an empty roll).

    requested_density: per bar, what Level 0 asked for (drawn dashed under the realised one).
    selection: bars (first, stop), 0-based half-open, highlighted (the inpaint region).
    generated: bar ranges that were just regenerated (outlined).
    """
    if piece is None:
        return None
    rd = None if requested_density is None else [round(float(x), 4) for x in np.asarray(requested_density).reshape(-1)]
    return {
        "notes": piece.notes.tolist(),  # (N, 4) pitch, start, end (exclusive), velocity
        "bar_starts": piece.bar_starts.tolist(),
        "time_signatures": piece.time_signatures.tolist(),
        "steps_per_beat": piece.steps_per_beat,
        "pitch_range": list(piece.pitch_range),
        "tempo": [round(float(x), 3) for x in piece.bar_tempo()],
        "density": [round(float(x), 4) for x in piece.bar_density()],
        "requested_density": rd,
        "selection": list(selection) if selection else None,
        "generated": [list(g) for g in generated] if generated else None,
        "title": title,
        "drawn": None,
    }


class FractalState:
    """What the `FractalView` shows while a generation unfolds: the latest tokens of every
    level, updated from `generate(..., return_intermediates=True)` records, and the influence
    map at the end. `value()` is the component's value."""

    def __init__(self, bar_starts, config, region: tuple[int, int] | None = None, title: str = ""):
        self.bar_starts = [int(s) for s in bar_starts]
        self.config = config
        self.region = list(region) if region else None  # (start step, stop step) generated
        self.title = title
        self.structure = self.harmony = self.notes = self.influence = None
        self.requested_density = None
        self.stage, self.iteration, self.done, self.total = "waiting", 0, 0, 0

    def update(self, record: dict) -> None:
        """Take one intermediate record {"level", "iteration", "tokens"} (sample 0)."""
        from ..tokens_fractalmidi import class_to_density, class_to_tempo

        level, tokens = record["level"], record["tokens"][0]
        self.stage, self.iteration = level, int(record["iteration"])
        if level == "structure":  # (2B,) tempo classes, then density classes
            B = len(tokens) // 2
            self.structure = {
                "tempo": [round(float(x), 2) for x in class_to_tempo(tokens[:B].clamp(min=0), self.config)],
                "density": [round(float(x), 3) for x in class_to_density(tokens[B:].clamp(min=0), self.config)],
            }
        elif level == "harmony":  # (H, 12) pitch classes on / off
            bits = (tokens.numpy() > 0.5).astype(np.int64) @ (1 << np.arange(12))  # (H,) 12-bit masks
            self.harmony = {"patch_steps": int(self.config.harmony_patch_steps), "masks": bits.tolist()}
        elif level == "notes":  # (T, P) states 0 silent / 1 onset / 2 held
            s = tokens.numpy()
            roll = np.stack([s == 1, s > 0, np.where(s == 1, 64, 0)]).astype(np.uint8)  # (3, T, P)
            self.notes = roll_to_notes(roll, self.config.pitch_low)[:, :3].tolist()

    def set_result(self, result) -> None:
        """The final notes, the requested density and the influence map of a generation."""
        if result.influence is not None:
            inf = result.influence[0].float().clamp(0, 1).numpy()  # (T, P)
            peak = float(inf.max())
            scaled = np.round(inf / peak * 255) if peak > 0 else np.zeros_like(inf)
            self.influence = {
                "T": int(inf.shape[0]), "P": int(inf.shape[1]), "max": round(peak, 6),
                "data": base64.b64encode(scaled.astype(np.uint8).tobytes()).decode("ascii"),  # row-major (T, P)
            }
        self.requested_density = [round(float(x), 4) for x in result.requested_density[0]]
        piece = result.to_piece()
        self.notes = piece.notes[:, :3].tolist()
        self.stage = "done"

    def progress(self, level: str, done: int, total: int) -> None:
        self.done, self.total = int(done), int(total)
        if self.stage == "waiting":
            self.stage = level

    def value(self) -> dict:
        return {
            "bar_starts": self.bar_starts,
            "pitch_range": [int(self.config.pitch_low), int(self.config.pitch_high)],
            "region": self.region,
            "title": self.title,
            "stage": self.stage,
            "iteration": self.iteration,
            "done": self.done,
            "total": self.total,
            "structure": self.structure,
            "requested_density": self.requested_density,
            "harmony": self.harmony,
            "notes": self.notes,
            "influence": self.influence,
        }


# ----------------------------------------------------------------------------- the components


def _static(name: str) -> str:
    return (resources.files(__package__) / "static" / name).read_text(encoding="utf-8")


def _frame(kind: str, footer: str = "") -> str:
    """The markup of both components (`window.fractalmidi.parts` finds its pieces): a head line
    (title, info) over a canvas. kind: the root's class, "fm-roll" or "fm-view"."""
    return (f'<div class="fm-root {kind}"><div class="fm-head"><span class="fm-title"></span>'
            f'<span class="fm-info"></span></div><canvas class="fm-canvas"></canvas>{footer}</div>')


# Every component carries this as its `head`: the shared code and the shared CSS in one inline
# script, which gradio runs once per page (it skips an inline head script already present).
HEAD = "<script>\n{}\nwindow.fractalmidi.addStyle({});\n</script>".format(
    _static("common.js"), json.dumps(_static("components.css")).replace("</", "<\\/"))
_ROLL_JS, _VIEW_JS = _static("piano_roll.js"), _static("fractal_view.js")


class PianoRoll(gr.HTML):
    """A piano roll with structure lanes and bar selection (see the module docstring).

    Value: None, or a dict made by `roll_value`, which the browser changes in two places:
    `selection` ([first, stop] bars, 0-based, half-open) and `drawn` ({"tempo": [...],
    "density": [...]}, one entry or null per bar). Events, with their data: `bars_selected`
    ({first, stop}), `curve_drawn` ({curve: "tempo" | "density", values}).
    `selectable=False` makes it display-only.
    """

    def __init__(self, value=None, *, selectable: bool = True, **kwargs):
        super().__init__(
            value=value,
            html_template=_frame("fm-roll", '<div class="fm-help"></div>'),
            js_on_load=_ROLL_JS,
            head=HEAD,
            apply_default_css=False,
            selectable=selectable,
            **kwargs,
        )

    def api_info(self) -> dict[str, Any]:
        return {"type": "object", "description": "piano roll: notes, bar_starts, tempo, density, selection"}


class FractalView(gr.HTML):
    """The levels of a generation as they unfold, and the condition-influence map.
    Value: None or `FractalState.value()`."""

    def __init__(self, value=None, **kwargs):
        super().__init__(
            value=value,
            html_template=_frame("fm-view"),
            js_on_load=_VIEW_JS,
            head=HEAD,
            apply_default_css=False,
            **kwargs,
        )

    def api_info(self) -> dict[str, Any]:
        return {"type": "object", "description": "levels of the generation: structure, harmony, notes, influence"}
