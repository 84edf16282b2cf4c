// The fractal view's js_on_load (gradio gives it element, props, watch): one panel per level
// of the hierarchy as it unfolds, and the condition-influence map (fractalmidi/app_components.py
// describes the value). Uses common.js.
const fm = window.fractalmidi;
const { root, canvas, title: titleEl, info: stageEl } = fm.parts(element);
const LEFT = 96, PANELS = [['structure', 'Level 0 · structure', 70], ['harmony', 'Level 1 · harmony', 84],
  ['notes', 'Level 2 · notes', 150], ['influence', 'condition influence', 110]];
const GAP = 8, PCS = fm.PITCH_NAMES;
const TOTAL_H = PANELS.reduce((h, p) => h + p[2] + GAP, 0);

function draw() {
  const [ctx, W] = fm.paint(root, canvas, TOTAL_H);
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
  let [pa, pz] = fm.pitchSpan(v.notes);
  pa = Math.max(v.pitch_range[0], pa - 2); pz = Math.min(v.pitch_range[1], pz + 2);
  for (const [key, label, h] of PANELS) {
    ctx.fillStyle = '#22252d'; ctx.fillRect(LEFT, y, W - LEFT, h);
    ctx.fillStyle = key === active ? '#9cf' : '#aab'; ctx.font = (key === active ? 'bold ' : '') + '11px sans-serif';
    ctx.fillText(label, 4, y + 13);
    if (v.region) { ctx.fillStyle = 'rgba(0,0,0,0.35)'; ctx.fillRect(LEFT, y, X(v.region[0]) - LEFT, h); ctx.fillRect(X(v.region[1]), y, W - X(v.region[1]), h); }
    for (const s of bs) fm.barLine(ctx, X(s), y, y + h);
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
fm.mount(root, watch, draw, { value: () => props.value });  // window.fractalmidi.get('#fractal_view'), see common.js
