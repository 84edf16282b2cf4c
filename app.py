"""FractalMIDI in the browser: generate, see, hear, select bars and regenerate them, continue,
download; watch the hierarchy unfold; and the OSC performance server beside it.

    python app.py [--host 127.0.0.1] [--port 7860] [--model PATH] [--no-osc] [--osc-port 5005]

Environment overrides: FRACTALMIDI_HOST, FRACTALMIDI_PORT, FRACTALMIDI_MODEL,
FRACTALMIDI_NO_OSC=1, FRACTALMIDI_OSC_PORT, FRACTALMIDI_OSC_REPLY_PORT. The same file is a
Hugging Face Space's entry point. Handlers are plain functions (tests call them without a
server); every event has an `api_name`, so `gradio_client` can call /generate, /inpaint,
/continue, /load_midi. One model is shared by all visitors and by the OSC server: the queue
runs one generation at a time, and a lock keeps the OSC thread out while one runs.
"""

from __future__ import annotations

import argparse
import os
import queue
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

import gradio as gr
from fractalmidi import FractalMIDIConfig, InputError, Piece, bar_length_steps, controls, read_midi, write_midi
from fractalmidi import limits_fractalmidi as limits
from fractalmidi.web.app_components import FractalState, FractalView, PianoRoll, roll_value
from fractalmidi.web.audio import MAX_AUDIO_SECONDS, describe_renderer, render_audio

ROOT = Path(__file__).resolve().parent
DEFAULT_MODEL = controls.DEFAULT_MODEL
MAX_UPLOAD_BYTES = 2 * 1024 * 1024  # uploads above this are refused
MAX_BARS = controls.MAX_INTERACTIVE_BARS  # per piece in the app (generation is O(length) work: a CPU takes a while at 256)
# audio is rendered for a piece's first MAX_AUDIO_SECONDS (600 s) only (the MIDI holds all of it):
# 256 bars at 10 BPM would be 102 minutes, half a gigabyte of WAV
MAX_TEXT_CHARS = 10_000  # a typed field (a curve for 256 bars takes about 2,000)
TIME_SIGNATURES = ["4/4", "3/4", "2/4", "6/8", "5/4", "7/8", "12/8"]  # offered; any other the model takes is accepted
OUT_ROOT = Path(tempfile.gettempdir()) / "fractalmidi_app"  # results, served by gradio from the temp dir
OUT_MAX_AGE_S = 3600  # result folders older than this are removed
# gradio's own copies of the results and uploads (its cache): every 10 minutes, those older than an hour go
DELETE_CACHE = (600, OUT_MAX_AGE_S)
OSC_OUT_DIR = Path("outputs/osc").resolve()  # MIDI files of OSC generations (the OSC server's default)


def _decoding_defaults() -> dict:
    """Where the controls start: the decoding defaults of the model the app will load
    ($FRACTALMIDI_MODEL or the shipped one), else those of a new model's config."""
    try:
        return controls.decoding_defaults(controls.model_dir())
    except InputError:
        from fractalmidi.generation_fractalmidi import default_generation_config

        gen = default_generation_config(FractalMIDIConfig())
        return {k: getattr(gen, k) for k in controls.DECODING_FIELDS}


DEFAULTS = _decoding_defaults()

# ----------------------------------------------------------------------------- the model

MODEL = None  # the FractalMIDIModel every handler and the OSC server share
MODEL_PATH: Path | None = None
MODEL_MESSAGE = "No model loaded."
MODEL_LOCK = threading.Lock()  # one generation at a time (they share the CPU; generate keeps no state on the model)
OSC_SERVER = None  # the FractalOSCServer, when started


def load_model(path=None):
    """Load the model from `path` (default: $FRACTALMIDI_MODEL, else the shipped checkpoint).
    Returns it, or None with `MODEL_MESSAGE` saying what is missing."""
    global MODEL, MODEL_PATH, MODEL_MESSAGE
    path = controls.model_dir(path)
    try:
        model = controls.load_model(path)
    except InputError:
        MODEL, MODEL_PATH = None, None
        MODEL_MESSAGE = (
            f"No model found at `{path}` (expected config.json and model.safetensors). Train one "
            "(README, Training) or start the app with `--model PATH`."
        )
        return None
    MODEL, MODEL_PATH, MODEL_MESSAGE = model, path, f"Model: `{path}`"
    return MODEL


def set_model(model, path="(in memory)"):
    """Use an already loaded model (tests)."""
    global MODEL, MODEL_PATH, MODEL_MESSAGE
    MODEL, MODEL_PATH, MODEL_MESSAGE = model, Path(str(path)), f"Model: `{path}`"


def get_model():
    if MODEL is None:
        raise gr.Error(MODEL_MESSAGE)
    return MODEL


# ----------------------------------------------------------------------------- helpers


_PATH = re.compile(r"(?<![\w.~])/(?:[^\s/'\"`]+/)+([^\s/'\"`]*)")  # an absolute path; group 1: its last part


def _message(e, capitalise: bool = True) -> str:
    """An error's message for the page: capitalised, every absolute path reduced to its last
    part (the server's folders are none of the visitor's business), and not too long."""
    text = _PATH.sub(lambda m: m.group(1), str(e)).strip()
    if len(text) > 500:
        text = text[:400] + " ... " + text[-80:]
    return _cap(text) if capitalise else text


def _control(parse, value, *args, field: str, hint: str = ""):
    """`parse(value, *args)` (a `fractalmidi.controls` parser); its InputError, which names the
    field, the value and the allowed range, becomes the message on the page (gr.Error)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        raise gr.Error(f"{_cap(field)}: a number of {value.bit_length()} bits is far outside the allowed range.{hint}")
    if isinstance(value, str) and len(value) > MAX_TEXT_CHARS:
        raise gr.Error(_too_long(field, value))
    try:
        return parse(value, *args)
    except InputError as e:
        raise gr.Error(_message(e) + hint) from None


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _too_long(field: str, text: str) -> str:
    return f"{_cap(field)}: {len(text)} characters, more than the {MAX_TEXT_CHARS} a field takes."


def _text(value, field: str) -> str:
    """A typed field's text, stripped ('' for None)."""
    if value is None:
        return ""
    try:
        text = str(value)
    except ValueError:  # an int of more than 4300 digits
        raise gr.Error(f"{_cap(field)}: a number of more than 4300 digits is far outside the allowed range.") from None
    if len(text) > MAX_TEXT_CHARS:
        raise gr.Error(_too_long(field, text))
    return text.strip()


def _new_out_dir() -> Path:
    """A fresh folder for one result; folders older than an hour are removed."""
    OUT_ROOT.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for d in OUT_ROOT.iterdir():
        try:
            if d.is_dir() and now - d.stat().st_mtime > OUT_MAX_AGE_S:
                shutil.rmtree(d, ignore_errors=True)
        except OSError:
            pass
    return Path(tempfile.mkdtemp(prefix="r_", dir=OUT_ROOT))


def read_upload(path) -> Piece:
    """A MIDI file the user gave, as a Piece; refused with a clear message (gr.Error) that
    names the file by its base name when it is missing, too big, not MIDI, or unusable."""
    path = getattr(path, "name", path)  # a tempfile wrapper (older gradio)
    if path is None or (isinstance(path, str) and not path.strip()):
        raise gr.Error("No MIDI file: generate a piece or upload a .mid file first.")
    if not isinstance(path, (str, os.PathLike)):
        raise gr.Error(f"MIDI file: expected an uploaded .mid file, got {type(path).__name__}.")
    if len(str(path)) > 4096:
        raise gr.Error("MIDI file: the file name is too long.")
    path = Path(path)
    name = _short(path.name)
    try:
        found = path.is_file()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        found = False
    if not found:
        raise gr.Error(f"MIDI file {name}: file not found.")
    size = path.stat().st_size
    if size > MAX_UPLOAD_BYTES:
        raise gr.Error(f"MIDI file {name} is {size / 2**20:.1f} MB; the limit is {MAX_UPLOAD_BYTES / 2**20:.0f} MB.")
    try:
        piece, _ = read_midi(path, max_bytes=MAX_UPLOAD_BYTES)
    except InputError as e:  # its message starts with the path: the file's name is enough
        raise gr.Error(f"Not a usable MIDI file: {_message(str(e).replace(str(path), name), False)}") from None
    except Exception as e:  # a parser failure on garbage input
        why = _message(str(e).replace(str(path), name), False)
        raise gr.Error(f"{name} is not a MIDI file ({type(e).__name__}: {why}).") from None
    if piece.num_bars > MAX_BARS:
        raise gr.Error(f"MIDI file {name} has {piece.num_bars} bars; the app takes up to {MAX_BARS}.")
    return piece


def _short(text: str, n: int = 80) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def _time_signature(text) -> tuple[int, int]:
    config = get_model().config
    return _control(controls.time_signature, text, config.steps_per_beat, config.max_bar_len, field="time signature")


def _bar_range(text, num_bars: int) -> tuple[int, int]:
    """'5-8' (bars from 1, both ends included) -> (4, 8), 0-based half-open."""
    try:
        ranges = controls.bar_ranges(_text(text, "bars to regenerate"), num_bars)
    except InputError as e:
        raise gr.Error(f"Bars to regenerate: {_message(e, capitalise=False)}; drag over the roll to select them.") from None
    if len(ranges) != 1:
        raise gr.Error(f"Bars to regenerate: give one range like 5-8, got {len(ranges)} ranges.")
    return ranges[0]


def _curve(text, what: str, num_bars: int, generated: list[int]) -> list | None:
    """A per-bar curve typed as a comma list (empty entries are left to the model), placed on
    the piece's bars: one value per bar, one per generated bar, or any number of values
    stretched (linear interpolation) over the generated bars. Checked by `controls.curve`
    (density: 0 to the model's density_max; tempo: limits.TEMPO_BPM); never a file."""
    text = _text(text, f"{what} curve")
    if not text:
        return None
    values = _control(controls.curve, [v.strip() for v in text.split(",")], what, get_model().config.density_max,
                      field=f"{what} curve")
    if len(values) == num_bars:
        return values
    out: list = [None] * num_bars
    if len(values) != len(generated):
        if any(v is None for v in values):
            raise gr.Error(
                f"The {what} curve has {len(values)} values; give one per bar ({num_bars}) or per generated bar "
                f"({len(generated)}), or leave no empty entries so it can be stretched."
            )
        values = np.interp(np.linspace(0, len(values) - 1, len(generated)), np.arange(len(values)), values).tolist()
    for i, v in zip(generated, values):
        out[i] = v
    return out


def _structure(density, tempo, num_bars: int, generated: list[int]) -> dict | None:
    s = {k: c for k, c in (("density", _curve(density, "density", num_bars, generated)),
                           ("tempo", _curve(tempo, "tempo", num_bars, generated))) if c is not None}
    return s or None


def _seed(value) -> int:
    """The seed typed: a whole number in limits.SEED; -1 or empty: a random one."""
    if value is None or (isinstance(value, str) and value.strip() in ("", "-1")):
        return int(np.random.randint(0, 2**31 - 1))
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) and value == -1:
        return int(np.random.randint(0, 2**31 - 1))
    return _control(controls.seed, value, field="seed", hint=" (-1: a random seed)")


def _sampling(seed, temperature, cfg, iterations, refine_ratio) -> dict:
    """Checked sampling arguments of `generate` (the ranges of `fractalmidi.controls`)."""
    model = get_model()
    kw = dict(temperature=_control(controls.temperature, temperature, field="temperature"),
              guidance_scale=_control(controls.guidance_scale, cfg, field="cfg"),
              refine_ratio=_control(controls.refine_ratio, refine_ratio, field="refine ratio"))
    text = _text(iterations, "iterations")
    if text:
        kw["num_iterations"] = _control(controls.iterations, text, len(model.config.levels), field="iterations",
                                        hint=f" ({', '.join(model.config.levels)}; e.g. 8,8,3)")
    kw["seed"] = _seed(seed)
    return kw


def _stream(kwargs: dict, view: FractalState, progress):
    """Run `model.generate(**kwargs)` on a thread and yield `view` after every network pass
    (the latest intermediate of the level being decoded); returns the result."""
    model = get_model()
    events: queue.SimpleQueue = queue.SimpleQueue()

    def on_progress(level, done, total, record):  # record: the level's tokens after this pass, or None
        events.put(("pass", level, done, total, record))

    def work():
        try:
            with MODEL_LOCK:
                result = model.generate(**kwargs, progress=on_progress, return_intermediates=True, return_influence=True)
            events.put(("result", result))
        except Exception as e:  # reported on the page, never a crash
            events.put(("error", e))

    threading.Thread(target=work, name="fractalmidi-generate", daemon=True).start()
    seen = None
    while True:
        event = events.get()
        if event[0] == "error":
            e = event[1]
            if isinstance(e, ValueError):
                raise gr.Error(_message(e))
            raise gr.Error(f"Generation failed: {type(e).__name__}: {_message(e)}")
        if event[0] == "result":
            return event[1]
        _, level, done, total, record = event
        if record is not None and record is not seen:
            view.update(record)
            seen = record
        view.progress(level, done, total)
        progress(done / max(total, 1), desc=f"{level}: pass {done}/{total}")
        yield view.value()


NO_CHANGE = gr.update()


def _finish(result, view: FractalState, stem: str, title: str, seconds: float, generated=None, selection=None):
    """Write the MIDI, render the audio; the final outputs (roll, view, midi, audio, status)."""
    view.set_result(result)
    piece = result.to_piece()
    out = _new_out_dir()
    midi = write_midi(piece, out / f"{stem}.mid")
    wav, how = _audio(piece, out / f"{stem}.wav")
    roll = roll_value(piece, requested_density=result.requested_density[0].tolist(), selection=selection,
                      generated=generated, title=title)
    status = (
        f"{title}: {piece.num_bars} bars, {len(piece.notes)} notes, {piece.duration_seconds:.1f} s of music; "
        f"{result.num_forward_passes} network passes in {seconds:.1f} s. Audio: {how}."
    )
    return roll, view.value(), str(midi), wav, status


def _audio(piece: Piece, path: Path) -> tuple[str | None, str]:
    """The piece's audio (its first MAX_AUDIO_SECONDS) as a WAV file: (path or None, how, in
    words). A renderer's failure costs the audio, never the result."""
    try:
        wav, how = render_audio(piece, path, max_seconds=MAX_AUDIO_SECONDS)
    except Exception as e:
        return None, f"not rendered ({type(e).__name__}: {_message(e)})"
    if piece.duration_seconds > MAX_AUDIO_SECONDS:
        how += "; the MIDI file holds the whole piece"
    return str(wav), how


# ----------------------------------------------------------------------------- handlers


def generate(bars, time_signature, seed, temperature, cfg, iterations, refine_ratio, density, tempo,
             progress=gr.Progress()):
    """A new piece. Yields (roll, fractal view, MIDI path, audio path, status) as it unfolds."""
    model = get_model()
    bars = _control(controls.bars, bars, MAX_BARS, field="bars")
    sig = _time_signature(time_signature)
    kw = _sampling(seed, temperature, cfg, iterations, refine_ratio)
    structure = _structure(density, tempo, bars, list(range(bars)))
    starts = np.concatenate([[0], np.cumsum([bar_length_steps(*sig, model.config.steps_per_beat)] * bars)])
    title = f"Generated, seed {kw['seed']}"
    view = FractalState(starts, model.config, title=title)
    yield NO_CHANGE, view.value(), NO_CHANGE, NO_CHANGE, "Generating..."
    t0 = time.perf_counter()
    stream = _Capture(_stream(dict(kw, num_bars=bars, time_signatures=sig, structure=structure), view, progress))
    for v in stream:
        yield NO_CHANGE, v, NO_CHANGE, NO_CHANGE, f"Generating: {v['stage']}, pass {v['done']}/{v['total']}"
    yield _finish(stream.value, view, f"fractalmidi_seed{kw['seed']}", title, time.perf_counter() - t0)


def inpaint(midi_file, bars_to_regenerate, seed, temperature, cfg, iterations, refine_ratio, density, tempo,
            progress=gr.Progress()):
    """Regenerate bars of a MIDI file ('5-8', bars from 1); every note starting outside them
    is kept exactly. Yields (roll, fractal view, MIDI path, audio path, status)."""
    model = get_model()
    prompt = read_upload(midi_file)
    first, stop = _bar_range(bars_to_regenerate, prompt.num_bars)
    kw = _sampling(seed, temperature, cfg, iterations, refine_ratio)
    structure = _structure(density, tempo, prompt.num_bars, list(range(first, stop)))
    region = (int(prompt.bar_starts[first]), int(prompt.bar_starts[stop]))
    title = f"Bars {first + 1}-{stop} regenerated, seed {kw['seed']}"
    view = FractalState(prompt.bar_starts, model.config, region=region, title=title)
    yield NO_CHANGE, view.value(), NO_CHANGE, NO_CHANGE, f"Regenerating bars {first + 1}-{stop}..."
    t0 = time.perf_counter()
    stream = _Capture(_stream(dict(kw, prompt=prompt, inpaint_bars=[(first, stop)], structure=structure), view, progress))
    for v in stream:
        yield NO_CHANGE, v, NO_CHANGE, NO_CHANGE, f"Regenerating bars {first + 1}-{stop}: {v['stage']}, pass {v['done']}/{v['total']}"
    yield _finish(stream.value, view, f"{_stem(midi_file)}_bars{first + 1}-{stop}_seed{kw['seed']}", title,
                  time.perf_counter() - t0, generated=[(first, stop)], selection=(first, stop))


def continue_piece(midi_file, more_bars, seed, temperature, cfg, iterations, refine_ratio, density, tempo,
                   progress=gr.Progress()):
    """Add `more_bars` bars after a MIDI file (kept whole), in its last bar's metre.
    Yields (roll, fractal view, MIDI path, audio path, status)."""
    model = get_model()
    prompt = read_upload(midi_file)
    room = MAX_BARS - prompt.num_bars
    if room < 1:
        raise gr.Error(f"Bars to add: the piece has {prompt.num_bars} bars already, the most the app takes ({MAX_BARS}).")
    more = _control(controls.bars, more_bars, room, "bars to add", field="bars to add",
                    hint=f" (the app takes up to {MAX_BARS} bars)")
    total = prompt.num_bars + more
    kw = _sampling(seed, temperature, cfg, iterations, refine_ratio)
    structure = _structure(density, tempo, total, list(range(prompt.num_bars, total)))
    last = bar_length_steps(*(int(x) for x in prompt.time_signatures[-1]), model.config.steps_per_beat)
    starts = np.concatenate([prompt.bar_starts, prompt.num_steps + last * np.arange(1, more + 1)])
    title = f"Continued by {more} bars, seed {kw['seed']}"
    view = FractalState(starts, model.config, region=(prompt.num_steps, int(starts[-1])), title=title)
    yield NO_CHANGE, view.value(), NO_CHANGE, NO_CHANGE, f"Adding {more} bars..."
    t0 = time.perf_counter()
    stream = _Capture(_stream(dict(kw, prompt=prompt, num_bars=total, structure=structure), view, progress))
    for v in stream:
        yield NO_CHANGE, v, NO_CHANGE, NO_CHANGE, f"Adding {more} bars: {v['stage']}, pass {v['done']}/{v['total']}"
    yield _finish(stream.value, view, f"{_stem(midi_file)}_plus{more}_seed{kw['seed']}", title,
                  time.perf_counter() - t0, generated=[(prompt.num_bars, total)])


def load_midi(midi_file):
    """An uploaded MIDI file becomes the piece on the roll (to inpaint or continue); a bad file
    is refused with a message and leaves the page as it was.
    Returns (roll, fractal view, MIDI path, audio path, status, bars to regenerate)."""
    try:
        piece = read_upload(midi_file)
    except gr.Error as e:
        return NO_CHANGE, NO_CHANGE, NO_CHANGE, NO_CHANGE, f"Upload refused: {e.message}", NO_CHANGE
    name = Path(str(getattr(midi_file, "name", midi_file))).stem
    out = _new_out_dir()
    midi = write_midi(piece, out / f"{name}.mid")  # on the grid: what inpaint and continue will see
    wav, how = _audio(piece, out / f"{name}.wav")
    roll = roll_value(piece, title=f"Uploaded: {name}")
    status = (f"Loaded {name}: {piece.num_bars} bars, {len(piece.notes)} notes, {piece.duration_seconds:.1f} s. "
              f"Select bars to regenerate, or continue it. Audio: {how}.")
    return roll, None, str(midi), wav, status, ""


def select_bars(evt: gr.EventData):
    """The bars dragged over on the roll (the `bars_selected` event's {first, stop}, 0-based,
    half-open) as text for the inpaint box: '5-8', bars from 1."""
    try:
        first, stop = int(evt.first), int(evt.stop)
    except (AttributeError, TypeError, ValueError, OverflowError):  # OverflowError: inf
        return NO_CHANGE
    return f"{first + 1}-{stop}" if 0 <= first < stop <= MAX_BARS else NO_CHANGE


def show_selection(bars_text, roll):
    """The bars typed in the box, highlighted on the roll; a range that is not one of the
    roll's is refused with a message (nothing to highlight without a piece on the roll)."""
    starts = roll.get("bar_starts") if isinstance(roll, dict) else None
    if not isinstance(starts, list) or len(starts) < 2:
        return NO_CHANGE
    first, stop = _bar_range(bars_text, len(starts) - 1)
    return dict(roll, selection=[first, stop])


def drawn_curve(evt: gr.EventData):
    """A curve drawn in a lane of the roll (the `curve_drawn` event's {curve, values}, one
    value or null per bar) as a comma list for its box. Returns (density, tempo)."""
    data = getattr(evt, "_data", None)
    data = data if isinstance(data, dict) else {}
    name, values = data.get("curve"), data.get("values")
    if name not in ("density", "tempo") or not isinstance(values, list) or len(values) > MAX_BARS:
        return NO_CHANGE, NO_CHANGE
    fmt = "{:.2f}" if name == "density" else "{:.0f}"
    try:  # a value that is not a finite number is left to the model, as a gap
        text = ",".join("" if x is None or not np.isfinite(float(x)) else fmt.format(float(x)) for x in values)
    except (TypeError, ValueError, OverflowError):
        return NO_CHANGE, NO_CHANGE
    return (text, NO_CHANGE) if name == "density" else (NO_CHANGE, text)


def model_info():
    """The model in use (or why there is none) and how audio is rendered."""
    return f"{MODEL_MESSAGE} · Audio: {describe_renderer()}"


def osc_generate(params):
    """The OSC server's generation: the current performance parameters, a fresh seed."""
    from fractalmidi.web.osc import resample_level0

    model = get_model()
    structure = {"density": resample_level0(params.level0, params.bars)} if params.level0 else None
    with MODEL_LOCK:
        result = model.generate(num_bars=int(params.bars), temperature=float(params.temperature),
                                guidance_scale=float(params.cfg), structure=structure)
    return result.to_piece()


def osc_status(shown):
    """The OSC panel: parameters, recent log, and the last result when it is new.
    Returns (parameters, log, last result roll, last result MIDI, the result shown)."""
    server = OSC_SERVER
    if server is None:
        return "OSC server off (started without `--no-osc` it listens on 127.0.0.1:5005).", "", NO_CHANGE, NO_CHANGE, shown
    p = server.params
    host, port = server.address if server.running else (server.host, server.port)
    level0 = "none (the model chooses)" if not p.level0 else ", ".join(f"{x:.2f}" for x in p.level0[:16]) + (
        " ..." if len(p.level0) > 16 else "")
    params = (f"**Listening** on `{host}:{port}`, replies to `{server.reply_host}:{server.reply_port}` · "
              f"temperature **{p.temperature:.2f}** · cfg **{p.cfg:.2f}** · bars **{p.bars}** · level0 density: {level0} · "
              f"waiting: {server.queued}" if server.running else "OSC server stopped.")
    log = "\n".join(f"{time.strftime('%H:%M:%S', time.localtime(t))} {level:7s} {msg}" for t, level, msg in list(server.log)[-30:])
    last = server.last_result
    if last is None or str(last[0]) == shown:
        return params, log, NO_CHANGE, NO_CHANGE, shown
    path, piece = last
    return params, log, roll_value(piece, title=f"OSC: {Path(path).name}"), str(path), str(path)


def open_osc_result():
    """The OSC server's last result, loaded into the editor."""
    server = OSC_SERVER
    if server is None or server.last_result is None:
        raise gr.Error("No OSC result yet: send /fractal/generate to the OSC server.")
    return load_midi(str(server.last_result[0]))


def _stem(midi_file) -> str:
    """A result's file name stem from its source's, without earlier edits' suffixes."""
    return re.sub(r"(_(bars\d+-\d+|plus\d+)_seed\d+)+$", "", Path(str(midi_file)).stem) or "piece"


class _Capture:
    """Iterate a generator and keep its return value in `.value`."""

    def __init__(self, gen):
        self.gen, self.value = gen, None

    def __iter__(self):
        self.value = yield from self.gen


# ----------------------------------------------------------------------------- layout

HELP = """
# FractalMIDI
Piano music generated top-down: first the **structure** (tempo and density of every bar), then the
**harmony** (pitch classes per beat), then the **notes**, each level decoded in parallel by iterative
masked prediction. **Generate** a piece, listen, **drag over the roll** to select bars and
**regenerate** them (every note outside stays), **continue** it, or upload your own MIDI. Drag in the
tempo / density lanes to draw a curve for the next generation. Audio is rendered for a piece's first
{minutes:g} minutes; the MIDI download always holds all of it.
""".format(minutes=MAX_AUDIO_SECONDS / 60)


def _raw(component):
    """`component` (a Number or Slider) hands the handler the value as sent: gradio's own
    rounding and range check fail on 'abc', None, NaN or infinity with a generic error, where
    the handler's check (fractalmidi.controls) names the field, the value and the allowed
    range. (An instance attribute: a subclass would make gradio write a .pyi beside app.py.)"""
    component.preprocess = lambda payload: payload
    return component


with gr.Blocks(title="FractalMIDI", analytics_enabled=False, delete_cache=DELETE_CACHE) as demo:
    gr.Markdown(HELP)
    model_md = gr.Markdown()
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            with gr.Group():
                bars = _raw(gr.Slider(1, 64, value=16, step=1, label="Bars"))
                time_signature = gr.Dropdown(TIME_SIGNATURES, value="4/4", label="Time signature", allow_custom_value=True)
                seed = _raw(gr.Number(0, precision=0, label="Seed (-1 or empty: random)", elem_id="seed"))
            with gr.Group():
                temperature = _raw(gr.Slider(*limits.TEMPERATURE, value=DEFAULTS["temperature"], step=0.05, label="Temperature"))
                cfg = _raw(gr.Slider(*limits.GUIDANCE_SCALE, value=DEFAULTS["guidance_scale"], step=0.1, label="CFG (guidance scale: condition strength; 1 = none)"))
                iterations = gr.Textbox("", label="Iterations per level (structure, harmony, notes)", placeholder=f"{','.join(map(str, DEFAULTS['num_iterations']))} (model default)")
                refine_ratio = _raw(gr.Slider(*limits.REFINE_RATIO, value=DEFAULTS["refine_ratio"], step=0.05, label="Refine ratio (fraction re-masked per refinement round)"))
            with gr.Group():
                density = gr.Textbox("", label="Density curve (onsets per step, per bar)", placeholder="0.5,0.8,1.2,... or draw it under the roll",
                                     elem_id="density")
                tempo = gr.Textbox("", label="Tempo curve (BPM per bar)", placeholder="90,90,100,... or draw it under the roll")
            generate_btn = gr.Button("Generate", variant="primary", elem_id="generate_btn")
            with gr.Group():
                bars_text = gr.Textbox("", label="Bars to regenerate (drag over the roll)", placeholder="5-8", elem_id="bars_text")
                inpaint_btn = gr.Button("Regenerate selected bars", elem_id="inpaint_btn")
            with gr.Group():
                more_bars = _raw(gr.Slider(1, 32, value=8, step=1, label="Bars to add"))
                continue_btn = gr.Button("Continue the piece", elem_id="continue_btn")
            upload = gr.File(label=f"Upload a MIDI to inpaint or continue (up to {MAX_UPLOAD_BYTES // 2**20} MB)",
                             file_types=[".mid", ".midi"], type="filepath", elem_id="upload")
        with gr.Column(scale=3):
            roll = PianoRoll(elem_id="piano_roll")
            status = gr.Markdown("Ready.", elem_id="status")
            with gr.Row():
                audio = gr.Audio(label="Listen", type="filepath", interactive=False, elem_id="audio")
                midi_out = gr.File(label="MIDI (download; what inpaint and continue work on)", interactive=False,
                                   elem_id="midi_out")
            with gr.Accordion("The fractal unfolding: each level as it is decoded, and where the condition matters", open=True):
                fractal = FractalView(elem_id="fractal_view")
    with gr.Accordion("OSC performance server", open=False):
        osc_md = gr.Markdown()
        osc_log = gr.Textbox(label="Recent OSC messages and refusals", lines=8, max_lines=8, interactive=False)
        osc_roll = PianoRoll(selectable=False, elem_id="osc_roll")
        with gr.Row():
            osc_file = gr.File(label="Last OSC result", interactive=False)
            osc_open = gr.Button("Open the last OSC result in the editor")
        osc_shown = gr.State("")
        osc_timer = gr.Timer(1.0)

    outputs = [roll, fractal, midi_out, audio, status]
    sampling = [seed, temperature, cfg, iterations, refine_ratio, density, tempo]
    # generations share one slot (concurrency_id): one model, one generation at a time
    generate_btn.click(generate, [bars, time_signature] + sampling, outputs, api_name="generate",
                       concurrency_id="model")
    inpaint_btn.click(inpaint, [midi_out, bars_text] + sampling, outputs, api_name="inpaint", concurrency_id="model")
    continue_btn.click(continue_piece, [midi_out, more_bars] + sampling, outputs, api_name="continue",
                       concurrency_id="model")
    upload.upload(load_midi, upload, outputs + [bars_text], api_name="load_midi")
    # the roll's custom events carry the selection / the drawn curve as event data
    roll.bars_selected(select_bars, None, bars_text, api_name="select_bars", queue=False, show_progress="hidden")
    roll.curve_drawn(drawn_curve, None, [density, tempo], api_name="drawn_curve", queue=False, show_progress="hidden")
    bars_text.submit(show_selection, [bars_text, roll], roll, api_name="show_selection", show_progress="hidden")
    osc_timer.tick(osc_status, osc_shown, [osc_md, osc_log, osc_roll, osc_file, osc_shown], api_name="osc_status",
                   show_progress="hidden", queue=False)
    osc_open.click(open_osc_result, None, outputs + [bars_text], api_name="open_osc_result")
    demo.load(model_info, None, model_md, api_name="model_info")

demo.queue(default_concurrency_limit=1, max_size=64)


# ----------------------------------------------------------------------------- launch


def parse_args(argv=None):
    env = os.environ.get
    p = argparse.ArgumentParser(description="FractalMIDI web app (and OSC server).")
    # a Hugging Face Space sets GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (0.0.0.0:7860) and SPACE_ID
    p.add_argument("--host", default=env("FRACTALMIDI_HOST") or env("GRADIO_SERVER_NAME") or "127.0.0.1",
                   help="address to serve on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=int(env("FRACTALMIDI_PORT") or env("GRADIO_SERVER_PORT") or 7860),
                   help="port (default 7860; 0: a free one)")
    p.add_argument("--model", default=env("FRACTALMIDI_MODEL"), help=f"model folder (default: ${controls.MODEL_ENV} if set, else the shipped checkpoints/{DEFAULT_MODEL.name})")
    p.add_argument("--no-osc", action="store_true",
                   default=env("FRACTALMIDI_NO_OSC", "1" if env("SPACE_ID") else "") not in ("", "0"),
                   help="do not start the OSC server (off by default in a Space)")
    p.add_argument("--osc-host", default=env("FRACTALMIDI_OSC_HOST", "127.0.0.1"), help="OSC listen address")
    p.add_argument("--osc-port", type=int, default=int(env("FRACTALMIDI_OSC_PORT", "5005")), help="OSC port (default 5005)")
    p.add_argument("--osc-reply-port", type=int, default=int(env("FRACTALMIDI_OSC_REPLY_PORT", "5006")),
                   help="where OSC results are sent, on 127.0.0.1 (default 5006)")
    return p.parse_args(argv)


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def main(argv=None):
    global OSC_SERVER
    args = parse_args(argv)
    load_model(args.model)
    print(MODEL_MESSAGE.replace("`", ""), flush=True)
    if not args.no_osc:
        from fractalmidi.web.osc import FractalOSCServer, OSCParams

        try:
            start = controls.decoding_defaults(MODEL) if MODEL is not None else DEFAULTS
            params = OSCParams(temperature=float(start["temperature"]), cfg=float(start["guidance_scale"]))
            OSC_SERVER = FractalOSCServer(osc_generate, host=args.osc_host, port=args.osc_port,
                                          reply_port=args.osc_reply_port, out_dir=OSC_OUT_DIR, params=params).start()
            print(f"OSC server on {args.osc_host}:{OSC_SERVER.address[1]}", flush=True)
        except OSError as e:
            print(f"OSC server not started: {args.osc_host}:{args.osc_port}: {e}", flush=True)
    port = args.port or _free_port(args.host)
    try:
        demo.launch(server_name=args.host, server_port=port, max_file_size=MAX_UPLOAD_BYTES, ssr_mode=False,
                    allowed_paths=[str(OUT_ROOT), str(OSC_OUT_DIR)])
    finally:
        if OSC_SERVER is not None:
            OSC_SERVER.stop()


if __name__ == "__main__":
    main()
