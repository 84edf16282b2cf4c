// What the app's components (fractalmidi/app_components.py) share in the browser. It runs once
// per page, before any component's own code: every component carries the same inline <script>
// as its gr.HTML `head` (this file, then the shared CSS), and gradio runs an inline head script
// only if the page holds none with the same text.
//
// window.fractalmidi is also the components' public debug surface, for the browser console and
// for browser automation (tests/test_browser.py):
//   fractalmidi.get(target)  the API of the component in `target` (an element or a CSS
//                            selector, e.g. '#piano_roll'; the elem_id the app gives it), or null
//                            before it is drawn:
//     .value()               its current value (what Python sent, with the browser's changes)
//     .point(bar, lane, frac)  piano roll only: page coordinates {x, y} of the middle of bar
//                            `bar` (0-based) in lane 'roll' (the notes, the default), 'tempo' or
//                            'density', at `frac` of the lane's height from its bottom (0.5)
(() => {
  const apis = new WeakMap();  // .fm-root element -> its API
  window.fractalmidi = {
    PITCH_NAMES: ['C', 'C#', 'D', 'D#', 'E', 'F', 'F#', 'G', 'G#', 'A', 'A#', 'B'],

    // The shared stylesheet, added to the page once.
    addStyle(css) {
      const style = document.createElement('style');
      style.id = 'fractalmidi-css';
      style.textContent = css;
      document.head.appendChild(style);
    },

    // A component's parts in the markup app_components.py gives both (`_frame`).
    parts(element) {
      const root = element.querySelector('.fm-root');
      const q = name => root.querySelector('.fm-' + name);
      return { root, canvas: q('canvas'), title: q('title'), info: q('info'), help: q('help') };
    },

    // Size the canvas to its root's width (at least 300 px) by `height` px, sharp on the
    // device's pixels, and clear it. Returns the context (in CSS px) and the width.
    paint(root, canvas, height) {
      const W = Math.max(root.clientWidth - 12, 300), dpr = window.devicePixelRatio || 1;
      canvas.width = W * dpr; canvas.height = height * dpr; canvas.style.height = height + 'px';
      const ctx = canvas.getContext('2d');
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.fillStyle = '#1d2027'; ctx.fillRect(0, 0, W, height);
      return [ctx, W];
    },

    // A bar line at x from y0 to y1, on the pixel grid; returns its x.
    barLine(ctx, x, y0, y1) {
      x = Math.round(x) + 0.5;
      ctx.strokeStyle = '#3a3f4b'; ctx.lineWidth = 1;
      ctx.beginPath(); ctx.moveTo(x, y0); ctx.lineTo(x, y1); ctx.stroke();
      return x;
    },

    // Lowest and highest pitch of notes [[pitch, ...], ...]; C3-C6 when there are none.
    pitchSpan(notes) {
      let a = 127, z = 0;
      for (const n of notes || []) { if (n[0] < a) a = n[0]; if (n[0] > z) z = n[0]; }
      return a > z ? [48, 84] : [a, z];
    },

    // Start a component: publish its API, redraw when Python sends a value or the root resizes.
    mount(root, watch, draw, api) {
      apis.set(root, api);
      watch('value', draw);
      new ResizeObserver(() => draw()).observe(root);
      draw();
    },

    get(target) {
      const el = typeof target === 'string' ? document.querySelector(target) : target;
      const root = el && (el.classList.contains('fm-root') ? el : el.querySelector('.fm-root'));
      return (root && apis.get(root)) || null;
    },
  };
})();
