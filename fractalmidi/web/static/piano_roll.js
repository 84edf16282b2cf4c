// The piano roll's js_on_load (gradio gives it element, props, trigger, watch): notes over
// pitch and time, bar numbers, the tempo and density lanes; dragging selects bars or draws a
// curve (fractalmidi/app_components.py describes the value and the events). Uses common.js.
const fm = window.fractalmidi;
const { root, canvas, title: titleEl, info: infoEl, help: helpEl } = fm.parts(element);
const selectable = props.selectable !== false;
const KEYS = 36, RULER = 16, ROLL_H = 300, GAP = 8, LANE_H = 58;
const TOTAL_H = RULER + ROLL_H + 2 * (GAP + LANE_H) + 4;
const LANES = { tempo: RULER + ROLL_H + GAP, density: RULER + ROLL_H + 2 * GAP + LANE_H };
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
  let [a, z] = fm.pitchSpan(v.notes);
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
  let ctx;
  [ctx, W] = fm.paint(root, canvas, TOTAL_H);
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
    const x = fm.barLine(ctx, stepX(v, bs[i]), RULER, TOTAL_H);
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
      text += ' · ' + fm.PITCH_NAMES[((p % 12) + 12) % 12] + (Math.floor(p / 12) - 1);
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

fm.mount(root, watch, draw, {  // window.fractalmidi.get('#piano_roll'), see common.js
  value: () => props.value,
  point: (bar, lane = 'roll', frac = 0.5) => {
    const v = val(), r = canvas.getBoundingClientRect();
    const [top, h] = lane === 'roll' ? [RULER, ROLL_H] : [LANES[lane], LANE_H];
    return { x: r.left + (stepX(v, v.bar_starts[bar]) + stepX(v, v.bar_starts[bar + 1])) / 2, y: r.top + top + h * (1 - frac) };
  },
});
