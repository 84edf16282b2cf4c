"""The app's two custom components, built on gradio 6's `gr.HTML` (html_template, css_template,
js_on_load), and the plain functions that make their values.

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
For tests, the root element carries `pianoRoll` / `fractalView`: `value()` and the page
coordinates of bars and lanes.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

import gradio as gr

from .piece import Piece, roll_to_notes

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
        from .tokens_fractalmidi import class_to_density, class_to_tempo

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


# ----------------------------------------------------------------------------- the piano roll

_ROLL_HTML = """
<div class="pr-root">
  <div class="pr-head"><span class="pr-title"></span><span class="pr-info"></span></div>
  <canvas class="pr-canvas"></canvas>
  <div class="pr-help"></div>
</div>
"""

_ROLL_CSS = """
.pr-root { width: 100%; font-family: ui-sans-serif, system-ui, sans-serif; font-size: 12px; color: #ddd;
  background: #16181d; border-radius: 8px; padding: 6px; box-sizing: border-box; user-select: none; }
.pr-head { display: flex; justify-content: space-between; gap: 12px; min-height: 18px; padding: 0 2px 4px 2px; }
.pr-title { font-weight: 600; color: #f2f2f2; }
.pr-info { color: #9aa; font-variant-numeric: tabular-nums; }
.pr-canvas { display: block; width: 100%; touch-action: none; cursor: crosshair; }
.pr-help { color: #889; padding-top: 4px; }
"""

_ROLL_JS = r"""
const root = element.querySelector('.pr-root');
const canvas = root.querySelector('.pr-canvas');
const titleEl = root.querySelector('.pr-title');
const infoEl = root.querySelector('.pr-info');
const helpEl = root.querySelector('.pr-help');
const selectable = props.selectable !== false;
const KEYS = 36, RULER = 16, ROLL_H = 300, GAP = 8, LANE_H = 58;
const TOTAL_H = RULER + ROLL_H + 2 * (GAP + LANE_H) + 4;
const LANES = { tempo: RULER + ROLL_H + GAP, density: RULER + ROLL_H + 2 * GAP + LANE_H };
const NAMES = ['C', 'C#', 'D', 'D#', 'E', 'F', 'F#', 'G', 'G#', 'A', 'A#', 'B'];
let W = 800, drag = null;

helpEl.textContent = selectable
  ? 'Drag over the roll or the bar numbers to select the bars to regenerate. Drag in the tempo or density lane to draw a curve.'
  : '';

function val() { return props.value && props.value.bar_starts ? props.value : null; }
function numSteps(v) { return v.bar_starts[v.bar_starts.length - 1]; }
function stepX(v, s) { return KEYS + s * (W - KEYS) / Math.max(numSteps(v), 1); }
function xStep(v, x) { return (x - KEYS) * numSteps(v) / (W - KEYS); }
function barAt(v, x) {
  const s = xStep(v, x), b = v.bar_starts;
  let i = 0;
  while (i < b.length - 2 && b[i + 1] <= s) i++;
  return Math.max(0, Math.min(i, b.length - 2));
}
function shownPitches(v) {
  const [lo, hi] = v.pitch_range;
  let a = 127, z = 0;
  for (const n of v.notes) { if (n[0] < a) a = n[0]; if (n[0] > z) z = n[0]; }
  if (a > z) { a = 48; z = 84; }
  a -= 2; z += 2;
  while (z - a < 36) { a -= 1; z += 1; }
  return [Math.max(lo, a), Math.min(hi, z)];
}
function velColour(vel) {  // dark blue -> teal -> yellow, by velocity
  const t = Math.max(0, Math.min(1, (vel - 20) / 107));
  const stops = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  const f = t * (stops.length - 1), i = Math.min(Math.floor(f), stops.length - 2), u = f - i;
  const c = stops[i].map((x, k) => Math.round(x + (stops[i + 1][k] - x) * u));
  return 'rgb(' + c.join(',') + ')';
}
function laneScale(v, name) {
  if (name === 'tempo') {
    const xs = (v.tempo || []).concat(((v.drawn || {}).tempo || []).filter(x => x != null));
    const lo = Math.min(40, ...xs), hi = Math.max(200, ...xs);
    return [lo, hi];
  }
  const xs = (v.density || []).concat(v.requested_density || [], ((v.drawn || {}).density || []).filter(x => x != null));
  return [0, Math.max(1.5, ...xs)];
}
function laneY(v, name, x) { const [lo, hi] = laneScale(v, name); return LANES[name] + LANE_H - 3 - (x - lo) / (hi - lo) * (LANE_H - 8); }
function yLane(v, name, y) { const [lo, hi] = laneScale(v, name); return lo + (LANES[name] + LANE_H - 3 - y) / (LANE_H - 8) * (hi - lo); }

function draw() {
  W = Math.max(root.clientWidth - 12, 300);
  const dpr = window.devicePixelRatio || 1;
  canvas.width = W * dpr; canvas.height = TOTAL_H * dpr; canvas.style.height = TOTAL_H + 'px';
  const ctx = canvas.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.fillStyle = '#1d2027'; ctx.fillRect(0, 0, W, TOTAL_H);
  const v = val();
  if (!v) {
    titleEl.textContent = 'No piece yet';
    ctx.fillStyle = '#889'; ctx.font = '14px sans-serif';
    ctx.fillText('Generate a piece or upload a MIDI file.', KEYS + 20, RULER + ROLL_H / 2);
    return;
  }
  titleEl.textContent = v.title || '';
  const [pa, pz] = shownPitches(v), rows = pz - pa + 1, rowH = ROLL_H / rows;
  const py = p => RULER + (pz - p) * rowH;
  // keyboard and pitch rows
  for (let p = pa; p <= pz; p++) {
    const black = [1, 3, 6, 8, 10].includes(p % 12);
    ctx.fillStyle = black ? '#1a1c22' : '#22252d'; ctx.fillRect(KEYS, py(p), W - KEYS, rowH);
    ctx.fillStyle = black ? '#333' : '#ccc'; ctx.fillRect(0, py(p), KEYS - 2, rowH - 0.5);
    if (p % 12 === 0) { ctx.fillStyle = '#555'; ctx.font = '9px sans-serif'; ctx.fillText('C' + (p / 12 - 1), 2, py(p) + rowH - 1); }
  }
  // lanes' backgrounds and labels
  for (const name of ['tempo', 'density']) {
    ctx.fillStyle = '#22252d'; ctx.fillRect(KEYS, LANES[name], W - KEYS, LANE_H);
    const [lo, hi] = laneScale(v, name);
    ctx.fillStyle = '#9aa'; ctx.font = '9px sans-serif';
    ctx.fillText(name === 'tempo' ? 'BPM' : 'dens.', 2, LANES[name] + 10);
    ctx.fillText(hi.toFixed(name === 'tempo' ? 0 : 1), 2, LANES[name] + 22);
    ctx.fillText(lo.toFixed(name === 'tempo' ? 0 : 1), 2, LANES[name] + LANE_H - 2);
  }
  // selection and regenerated bars
  const bs = v.bar_starts;
  const band = (a, b, fill, stroke) => {
    const x0 = stepX(v, bs[a]), x1 = stepX(v, bs[b]);
    if (fill) { ctx.fillStyle = fill; ctx.fillRect(x0, 0, x1 - x0, TOTAL_H); }
    if (stroke) { ctx.strokeStyle = stroke; ctx.lineWidth = 2; ctx.strokeRect(x0 + 1, RULER, x1 - x0 - 2, ROLL_H); }
  };
  for (const g of v.generated || []) band(g[0], g[1], 'rgba(120,160,255,0.10)', 'rgba(120,160,255,0.8)');
  let sel = v.selection;
  if (drag && drag.mode === 'select') sel = [Math.min(drag.a, drag.b), Math.max(drag.a, drag.b) + 1];
  if (sel) band(sel[0], sel[1], 'rgba(255,196,0,0.18)', 'rgba(255,196,0,0.9)');
  // bar lines and numbers
  const every = Math.max(1, Math.ceil(18 / ((W - KEYS) / Math.max(bs.length - 1, 1))));
  ctx.font = '10px sans-serif';
  for (let i = 0; i < bs.length; i++) {
    const x = Math.round(stepX(v, bs[i])) + 0.5;
    ctx.strokeStyle = '#3a3f4b'; ctx.lineWidth = 1;
    ctx.beginPath(); ctx.moveTo(x, RULER); ctx.lineTo(x, TOTAL_H); ctx.stroke();
    if (i < bs.length - 1 && i % every === 0) { ctx.fillStyle = '#aab'; ctx.fillText(String(i + 1), x + 2, 11); }
  }
  // notes, velocity as colour
  const sx = (W - KEYS) / Math.max(numSteps(v), 1);
  for (const n of v.notes) {
    if (n[0] < pa || n[0] > pz) continue;
    ctx.fillStyle = velColour(n[3]);
    ctx.fillRect(stepX(v, n[1]), py(n[0]) + 0.5, Math.max((n[2] - n[1]) * sx - 0.5, 1), Math.max(rowH - 1, 1));
  }
  // structure curves, one value per bar
  const perBar = (xs, name, style, dashed, dots) => {
    if (!xs) return;
    ctx.strokeStyle = style; ctx.fillStyle = style; ctx.lineWidth = 1.5; ctx.setLineDash(dashed ? [4, 3] : []);
    ctx.beginPath();
    let pen = false;
    xs.forEach((x, i) => {
      if (x == null || i >= bs.length - 1) { pen = false; return; }
      const y = laneY(v, name, x), x0 = stepX(v, bs[i]), x1 = stepX(v, bs[i + 1]);
      if (dots) { ctx.fillRect(x0 + 2, y - 2, x1 - x0 - 4, 4); return; }
      if (pen) ctx.lineTo(x0, y); else ctx.moveTo(x0, y);
      ctx.lineTo(x1, y); pen = true;
    });
    ctx.stroke(); ctx.setLineDash([]);
  };
  if (v.density) {
    v.density.forEach((x, i) => {
      const x0 = stepX(v, bs[i]), x1 = stepX(v, bs[i + 1]), y = laneY(v, 'density', x);
      ctx.fillStyle = 'rgba(80,150,255,0.55)';
      ctx.fillRect(x0 + 1, y, x1 - x0 - 2, LANES.density + LANE_H - 3 - y);
    });
  }
  perBar(v.requested_density, 'density', '#ff6b6b', true, false);
  perBar(v.tempo, 'tempo', '#ffa94d', false, false);
  const drawn = v.drawn || {};
  perBar(drawn.density, 'density', '#ffe066', false, true);
  perBar(drawn.tempo, 'tempo', '#ffe066', false, true);
  ctx.font = '9px sans-serif';
  const legend = [['realised', '#9aa', true], ['requested', '#ff6b6b', !!v.requested_density], ['drawn', '#ffe066', selectable]];
  let lx = W - 6;
  for (const [word, colour, shown] of legend.reverse()) {
    if (!shown) continue;
    lx -= ctx.measureText(word).width + 8;
    ctx.fillStyle = colour; ctx.fillText(word, lx, LANES.density + 10);
  }
}

function where(e) { const r = canvas.getBoundingClientRect(); return [e.clientX - r.left, e.clientY - r.top]; }
function zone(y) {
  if (y < RULER + ROLL_H) return 'select';
  if (y >= LANES.tempo && y < LANES.tempo + LANE_H) return 'tempo';
  if (y >= LANES.density && y < LANES.density + LANE_H) return 'density';
  return null;
}
function drawAt(v, name, x, y) {
  const n = v.bar_starts.length - 1;
  const d = Object.assign({}, v.drawn || {});
  const xs = (d[name] || new Array(n).fill(null)).slice(0, n);
  while (xs.length < n) xs.push(null);
  let val = yLane(v, name, y);
  const [lo, hi] = laneScale(v, name);
  val = Math.max(name === 'tempo' ? 30 : 0, Math.min(val, hi));
  xs[barAt(v, x)] = name === 'tempo' ? Math.round(val) : Math.round(val * 100) / 100;
  d[name] = xs;
  return d;
}
canvas.addEventListener('pointerdown', e => {
  const v = val();
  if (!v || !selectable || e.button !== 0) return;
  const [x, y] = where(e), mode = zone(y);
  if (!mode || x < KEYS) return;
  canvas.setPointerCapture(e.pointerId);
  drag = { mode: mode, a: barAt(v, x), b: barAt(v, x) };
  if (mode !== 'select') { drag.drawn = drawAt(v, mode, x, y); props.value = Object.assign({}, v, { drawn: drag.drawn }); }
  draw();
});
canvas.addEventListener('pointermove', e => {
  const v = val();
  if (!v) return;
  const [x, y] = where(e);
  if (drag) {
    if (drag.mode === 'select') drag.b = barAt(v, x);
    else { drag.drawn = drawAt(Object.assign({}, v, { drawn: drag.drawn }), drag.mode, x, y); props.value = Object.assign({}, v, { drawn: drag.drawn }); }
    draw();
  }
  if (x >= KEYS) {
    const b = barAt(v, x), [pa, pz] = shownPitches(v);
    let text = 'bar ' + (b + 1) + ' (' + v.time_signatures[b].join('/') + ')';
    if (v.tempo) text += ' · ' + v.tempo[b].toFixed(0) + ' BPM';
    if (v.density) text += ' · density ' + v.density[b].toFixed(2);
    if (y >= RULER && y < RULER + ROLL_H) {
      const p = Math.round(pz - (y - RULER) / (ROLL_H / (pz - pa + 1)) + 0.5);
      text += ' · ' + NAMES[((p % 12) + 12) % 12] + (Math.floor(p / 12) - 1);
    }
    infoEl.textContent = text;
  }
});
function finish(e) {
  const v = val();
  if (!drag || !v) { drag = null; return; }
  const d = drag; drag = null;
  if (d.mode === 'select') {
    const sel = [Math.min(d.a, d.b), Math.max(d.a, d.b) + 1];
    props.value = Object.assign({}, v, { selection: sel });
    draw();
    trigger('bars_selected', { first: sel[0], stop: sel[1] });
  } else {
    props.value = Object.assign({}, v, { drawn: d.drawn });
    draw();
    trigger('curve_drawn', { curve: d.mode, values: d.drawn[d.mode] });
  }
}
canvas.addEventListener('pointerup', finish);
canvas.addEventListener('pointercancel', () => { drag = null; draw(); });
canvas.addEventListener('pointerleave', () => { if (!drag) infoEl.textContent = ''; });

// for tests: the value, and page coordinates of a bar's middle in the roll and the lanes
root.pianoRoll = {
  value: () => props.value,
  barX: i => { const v = val(), r = canvas.getBoundingClientRect(); return r.left + (stepX(v, v.bar_starts[i]) + stepX(v, v.bar_starts[i + 1])) / 2; },
  rollY: () => canvas.getBoundingClientRect().top + RULER + ROLL_H / 2,
  laneY: (name, frac) => canvas.getBoundingClientRect().top + LANES[name] + LANE_H * (1 - frac),
};
watch('value', draw);
new ResizeObserver(() => draw()).observe(root);
draw();
"""


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
            html_template=_ROLL_HTML,
            css_template=_ROLL_CSS,
            js_on_load=_ROLL_JS,
            apply_default_css=False,
            selectable=selectable,
            **kwargs,
        )

    def api_info(self) -> dict[str, Any]:
        return {"type": "object", "description": "piano roll: notes, bar_starts, tempo, density, selection"}


# ----------------------------------------------------------------------------- the fractal view

_VIEW_HTML = """
<div class="fv-root">
  <div class="fv-head"><span class="fv-title"></span><span class="fv-stage"></span></div>
  <canvas class="fv-canvas"></canvas>
</div>
"""

_VIEW_CSS = """
.fv-root { width: 100%; font-family: ui-sans-serif, system-ui, sans-serif; font-size: 12px; color: #ddd;
  background: #16181d; border-radius: 8px; padding: 6px; box-sizing: border-box; }
.fv-head { display: flex; justify-content: space-between; gap: 12px; min-height: 18px; padding: 0 2px 4px 2px; }
.fv-title { font-weight: 600; color: #f2f2f2; }
.fv-stage { color: #9cf; font-variant-numeric: tabular-nums; }
.fv-canvas { display: block; width: 100%; }
"""

_VIEW_JS = r"""
const root = element.querySelector('.fv-root');
const canvas = root.querySelector('.fv-canvas');
const titleEl = root.querySelector('.fv-title');
const stageEl = root.querySelector('.fv-stage');
const LEFT = 96, PANELS = [['structure', 'Level 0 · structure', 70], ['harmony', 'Level 1 · harmony', 84],
  ['notes', 'Level 2 · notes', 150], ['influence', 'condition influence', 110]];
const GAP = 8, PCS = ['C', 'C#', 'D', 'D#', 'E', 'F', 'F#', 'G', 'G#', 'A', 'A#', 'B'];
const TOTAL_H = PANELS.reduce((h, p) => h + p[2] + GAP, 0);

function draw() {
  const W = Math.max(root.clientWidth - 12, 300), dpr = window.devicePixelRatio || 1;
  canvas.width = W * dpr; canvas.height = TOTAL_H * dpr; canvas.style.height = TOTAL_H + 'px';
  const ctx = canvas.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.fillStyle = '#1d2027'; ctx.fillRect(0, 0, W, TOTAL_H);
  const v = props.value;
  if (!v || !v.bar_starts) {
    titleEl.textContent = 'The fractal unfolding appears here while a piece is generated.';
    stageEl.textContent = '';
    return;
  }
  titleEl.textContent = v.title || '';
  stageEl.textContent = v.stage === 'done' ? 'done · ' + v.total + ' network passes'
    : (v.stage + ' · iteration ' + (v.iteration + 1) + ' · pass ' + v.done + '/' + v.total);
  const bs = v.bar_starts, T = bs[bs.length - 1];
  const X = s => LEFT + s * (W - LEFT) / Math.max(T, 1);
  let y = 0;
  const active = { structure: 'structure', harmony: 'harmony', notes: 'notes', done: 'influence' }[v.stage];
  // pitch range of the notes panels
  let pa = 127, pz = 0;
  for (const n of v.notes || []) { if (n[0] < pa) pa = n[0]; if (n[0] > pz) pz = n[0]; }
  if (pa > pz) { pa = 48; pz = 84; }
  pa = Math.max(v.pitch_range[0], pa - 2); pz = Math.min(v.pitch_range[1], pz + 2);
  for (const [key, label, h] of PANELS) {
    ctx.fillStyle = '#22252d'; ctx.fillRect(LEFT, y, W - LEFT, h);
    ctx.fillStyle = key === active ? '#9cf' : '#aab'; ctx.font = (key === active ? 'bold ' : '') + '11px sans-serif';
    ctx.fillText(label, 4, y + 13);
    if (v.region) { ctx.fillStyle = 'rgba(0,0,0,0.35)'; ctx.fillRect(LEFT, y, X(v.region[0]) - LEFT, h); ctx.fillRect(X(v.region[1]), y, W - X(v.region[1]), h); }
    ctx.strokeStyle = '#3a3f4b'; ctx.lineWidth = 1;
    for (const s of bs) { const x = Math.round(X(s)) + 0.5; ctx.beginPath(); ctx.moveTo(x, y); ctx.lineTo(x, y + h); ctx.stroke(); }
    if (key === 'structure' && v.structure) {
      const d = v.structure.density, t = v.structure.tempo;
      const dmax = Math.max(1.5, ...d, ...(v.requested_density || [])), tlo = Math.min(...t) * 0.9, thi = Math.max(...t) * 1.1;
      d.forEach((x, i) => { const top = y + h - 2 - x / dmax * (h - 18); ctx.fillStyle = 'rgba(80,150,255,0.6)'; ctx.fillRect(X(bs[i]) + 1, top, X(bs[i + 1]) - X(bs[i]) - 2, y + h - 2 - top); });
      ctx.strokeStyle = '#ffa94d'; ctx.lineWidth = 1.5; ctx.beginPath();
      t.forEach((x, i) => { const yy = y + h - 2 - (x - tlo) / (thi - tlo) * (h - 18); if (i) ctx.lineTo(X(bs[i]), yy); else ctx.moveTo(X(bs[i]), yy); ctx.lineTo(X(bs[i + 1]), yy); });
      ctx.stroke();
      ctx.fillStyle = '#9aa'; ctx.font = '9px sans-serif';
      ctx.fillText('tempo ' + Math.round(Math.min(...t)) + '-' + Math.round(Math.max(...t)) + ' BPM', 4, y + 28);
      ctx.fillText('density (blue)', 4, y + 40);
    }
    if (key === 'harmony' && v.harmony) {
      const ps = v.harmony.patch_steps, rh = (h - 4) / 12;
      for (let pc = 0; pc < 12; pc++) if (pc % 2 === 0) { ctx.fillStyle = '#778'; ctx.font = '8px sans-serif'; ctx.fillText(PCS[pc], LEFT - 16, y + 2 + (11 - pc) * rh + rh); }
      ctx.fillStyle = '#b197fc';
      v.harmony.masks.forEach((m, k) => {
        for (let pc = 0; pc < 12; pc++) if (m & (1 << pc)) ctx.fillRect(X(k * ps) + 0.5, y + 2 + (11 - pc) * rh, Math.max(X((k + 1) * ps) - X(k * ps) - 1, 1), rh - 0.5);
      });
    }
    if (key === 'notes' && v.notes) {
      const rh = (h - 4) / (pz - pa + 1);
      for (const n of v.notes) {
        if (n[0] < pa || n[0] > pz) continue;
        ctx.fillStyle = '#63e6be';
        ctx.fillRect(X(n[1]), y + 2 + (pz - n[0]) * rh, Math.max(X(n[2]) - X(n[1]) - 0.5, 1), Math.max(rh - 0.5, 1));
      }
    }
    if (key === 'influence') {
      if (v.influence) {
        const inf = v.influence, raw = atob(inf.data), rh = (h - 4) / (pz - pa + 1), cw = (W - LEFT) / Math.max(inf.T, 1);
        for (let t = 0; t < inf.T; t++) for (let p = pa; p <= pz; p++) {
          const q = raw.charCodeAt(t * inf.P + (p - v.pitch_range[0]));
          if (q < 8) continue;
          const a = Math.sqrt(q / 255);
          ctx.fillStyle = 'rgba(255,' + Math.round(120 + 100 * a) + ',60,' + a.toFixed(3) + ')';
          ctx.fillRect(LEFT + t * cw, y + 2 + (pz - p) * rh, Math.max(cw, 1), Math.max(rh, 1));
        }
        ctx.fillStyle = '#9aa'; ctx.font = '9px sans-serif';
        ctx.fillText('|p(cond) - p(uncond)|', 4, y + 28);
        ctx.fillText('max ' + inf.max.toFixed(3), 4, y + 40);
      } else {
        ctx.fillStyle = '#667'; ctx.font = '10px sans-serif'; ctx.fillText('after the last note pass', LEFT + 8, y + h / 2);
      }
    }
    y += h + GAP;
  }
}
root.fractalView = { value: () => props.value };
watch('value', draw);
new ResizeObserver(() => draw()).observe(root);
draw();
"""


class FractalView(gr.HTML):
    """The levels of a generation as they unfold, and the condition-influence map.
    Value: None or `FractalState.value()`."""

    def __init__(self, value=None, **kwargs):
        super().__init__(
            value=value,
            html_template=_VIEW_HTML,
            css_template=_VIEW_CSS,
            js_on_load=_VIEW_JS,
            apply_default_css=False,
            **kwargs,
        )

    def api_info(self) -> dict[str, Any]:
        return {"type": "object", "description": "levels of the generation: structure, harmony, notes, influence"}
