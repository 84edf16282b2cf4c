"""The Gradio app: its handlers called directly, and the app served on loopback in a
subprocess, driven by gradio_client (generate, inpaint, continue, 16 at once, OSC wiring).

A tiny model (hub_configs/tiny.json) with its note head set to sparse output stands in for
the shipped one, so every generation takes a fraction of a second.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import wave
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from fractalmidi import read_midi

ROOT = Path(__file__).resolve().parent.parent
# liveness bounds (seconds): generous, each wait returns as soon as its condition holds; no test
# asserts on how long anything takes (the machine may be busy with other work)
START_TIMEOUT_S = 180  # the served app printing its URL
RESULT_TIMEOUT_S = 300  # a served generation (all 16 of the concurrent ones together)
OSC_TIMEOUT_S = 120  # an OSC-triggered generation showing in /osc_status
POP909_SONG = ROOT / "tests" / "data" / "pop909" / "001" / "001.mid"


# ----------------------------------------------------------------------------- shared helpers


def make_test_model(path: Path) -> Path:
    """The tiny model, its note-state head set to mostly silence (a few hundred notes per 16
    bars, as music has, instead of thousands), saved to `path`. It samples the whole
    distribution (top_p 1): with an untrained model's flat logits a nucleus would cut the
    rare onsets and make different seeds give the same few notes."""
    import torch

    from fractalmidi import FractalMIDIConfig, FractalMIDIModel

    torch.manual_seed(0)
    config = FractalMIDIConfig.from_json_file(ROOT / "hub_configs" / "tiny.json")
    config.default_top_p = 1.0
    model = FractalMIDIModel(config).eval()
    with torch.no_grad():
        model.notes.state_head.weight.mul_(0.1)
        model.notes.state_head.bias.view(-1, 3)[:] = torch.tensor([5.0, 0.0, 1.5])  # silent, onset, held
    model.save_pretrained(path)
    return path


def load_app():
    """app.py as a module (it lives at the repository root, outside the package)."""
    if "fractalmidi_app" in sys.modules:
        return sys.modules["fractalmidi_app"]
    spec = importlib.util.spec_from_file_location("fractalmidi_app", ROOT / "app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["fractalmidi_app"] = module
    spec.loader.exec_module(module)
    return module


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def app_env(tmp: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HOME=str(tmp / "hf"), HF_HUB_OFFLINE="1",
               GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
    for k in ("FRACTALMIDI_HOST", "FRACTALMIDI_PORT", "FRACTALMIDI_MODEL", "FRACTALMIDI_NO_OSC"):
        env.pop(k, None)
    return env


@contextmanager
def served_app(model_dir: Path, tmp: Path, osc_port: int | None = None, reply_port: int | None = None):
    """`python app.py` on 127.0.0.1 (a free port) in a subprocess; yields its URL."""
    cmd = [sys.executable, str(ROOT / "app.py"), "--model", str(model_dir), "--port", "0"]
    cmd += ["--osc-port", str(osc_port), "--osc-reply-port", str(reply_port)] if osc_port else ["--no-osc"]
    proc = subprocess.Popen(cmd, cwd=tmp, env=app_env(tmp), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    found = threading.Event()

    def read():
        for line in proc.stdout:
            lines.append(line)
            if "Running on local URL" in line:
                found.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        if not found.wait(START_TIMEOUT_S) or proc.poll() is not None:
            raise AssertionError("the app did not start:\n" + "".join(lines))
        url = re.search(r"(http://127\.0\.0\.1:\d+)", "".join(lines)).group(1)
        yield url, lines
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def outside(notes: np.ndarray, start: int, stop: int) -> set:
    """Notes (as tuples) that start outside steps [start, stop)."""
    keep = (notes[:, 1] < start) | (notes[:, 1] >= stop)
    return set(map(tuple, notes[keep].tolist()))


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_test_model(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def app(model_dir):
    module = load_app()
    module.load_model(model_dir)
    yield module
    module.load_model(model_dir)  # leave it loaded for the next test module


SAMPLING = dict(temperature=1.0, cfg=1.5, iterations="", refine_ratio=0.3, density="", tempo="")


def run(handler, *args, **kw):
    """All the yields of a streaming handler."""
    return list(handler(*args, **dict(SAMPLING, **kw)))


# ----------------------------------------------------------------------------- handlers


def test_generate_streams_each_level_then_writes_midi_and_audio(app):
    outs = run(app.generate, 8, "4/4", 3)
    stages = [o[1]["stage"] for o in outs if isinstance(o[1], dict) and "stage" in o[1]]
    # the view unfolds top down: structure, then harmony, then notes, then the result
    firsts = [stages.index(s) for s in ("structure", "harmony", "notes", "done")]
    assert firsts == sorted(firsts), stages
    roll, view, midi, wav, status = outs[-1]
    assert "8 bars" in status and "network passes" in status
    piece, _ = read_midi(midi)
    assert piece.num_bars == 8 and len(piece.notes) > 0
    assert np.array_equal(np.asarray(roll["notes"]), piece.notes)  # the roll shows what the file holds
    assert roll["bar_starts"] == list(range(0, 8 * 16 + 1, 16))
    assert len(roll["tempo"]) == len(roll["density"]) == len(roll["requested_density"]) == 8
    assert view["influence"]["T"] == 128 and view["influence"]["P"] == 88
    assert len(view["harmony"]["masks"]) == 128 // 4
    with wave.open(wav) as w:
        seconds = w.getnframes() / w.getframerate()
    assert abs(seconds - piece.duration_seconds) < 3.0
    # the same seed gives the same piece
    again = run(app.generate, 8, "4/4", 3)[-1]
    assert again[0]["notes"] == roll["notes"]


def test_generate_takes_time_signature_and_curves(app):
    roll = run(app.generate, 4, "3/4", 1, density="0.5,1,1.5,2", tempo="80")[-1][0]
    assert roll["time_signatures"] == [[3, 4]] * 4 and roll["bar_starts"][-1] == 48
    assert roll["requested_density"] == [0.5, 1.0, 1.5, 2.0]
    assert np.allclose(roll["tempo"], 80.0)  # one value stretched over every bar


def test_inpaint_keeps_every_note_outside_the_selection(app):
    midi = run(app.generate, 8, "4/4", 0)[-1][2]
    before, _ = read_midi(midi)
    outs = run(app.inpaint, midi, "3-5", 11)
    roll, view, new_midi, wav, status = outs[-1]
    after, _ = read_midi(new_midi)
    start, stop = int(before.bar_starts[2]), int(before.bar_starts[5])
    assert outside(after.notes, start, stop) == outside(before.notes, start, stop)
    assert set(map(tuple, after.notes.tolist())) != set(map(tuple, before.notes.tolist()))  # bars 3-5 are new
    assert roll["selection"] == [2, 5] and roll["generated"] == [[2, 5]]
    assert view["region"] == [start, stop]
    assert "Bars 3-5 regenerated" in status
    assert Path(new_midi).name == "fractalmidi_seed0_bars3-5_seed11.mid"


def test_inpaint_an_uploaded_song(app):
    roll, _, midi, wav, status, bars_text = app.load_midi(str(POP909_SONG))
    assert "Loaded 001" in status and bars_text == ""
    song, _ = read_midi(midi)
    first, stop = 4, 8
    new_midi = run(app.inpaint, midi, f"{first + 1}-{stop}", 5)[-1][2]
    after, _ = read_midi(new_midi)
    s0, s1 = int(song.bar_starts[first]), int(song.bar_starts[stop])
    assert outside(after.notes, s0, s1) == outside(song.notes, s0, s1)
    assert np.array_equal(after.tempo_bpm, song.tempo_bpm)  # inpainting keeps the tempo map


def test_continue_keeps_the_piece_and_adds_bars(app):
    midi = run(app.generate, 4, "4/4", 2)[-1][2]
    before, _ = read_midi(midi)
    roll, _, new_midi, _, status = run(app.continue_piece, midi, 3, 4, density="1.0")[-1]
    after, _ = read_midi(new_midi)
    assert after.num_bars == 7 and "Continued by 3 bars" in status
    assert set(map(tuple, before.notes.tolist())) <= set(map(tuple, after.notes.tolist()))
    assert roll["generated"] == [[4, 7]]
    assert roll["requested_density"][4:] == [1.0, 1.0, 1.0]


def test_bad_uploads_are_refused_with_a_message(app, tmp_path):
    import gradio as gr

    text = tmp_path / "notes.mid"
    text.write_text("this is not a MIDI file")
    big = tmp_path / "big.mid"
    big.write_bytes(b"MThd" + b"\0" * (3 * 2**20))
    empty = tmp_path / "empty.mid"
    empty.write_bytes(b"")
    for path, words in ((text, "not a MIDI file"), (big, "the limit is 2 MB"), (empty, "MIDI")):
        out = app.load_midi(str(path))
        assert out[4].startswith("Upload refused") and words in out[4], out[4]
        assert out[0] == app.NO_CHANGE  # the page keeps what it had
        with pytest.raises(gr.Error, match=re.escape(words)):
            run(app.inpaint, str(path), "1-2", 0)
        with pytest.raises(gr.Error, match=re.escape(words)):
            run(app.continue_piece, str(path), 4, 0)
    with pytest.raises(gr.Error, match="No MIDI file"):
        run(app.inpaint, None, "1-2", 0)


def test_bad_parameters_are_refused_with_a_message(app):
    import gradio as gr

    midi = run(app.generate, 4, "4/4", 0)[-1][2]
    cases = [
        (lambda: run(app.inpaint, midi, "abc", 0), "Bars to regenerate: bars must look like 16-32"),
        (lambda: run(app.inpaint, midi, "3-9", 0), "outside the piece's bars 1-4"),
        (lambda: run(app.inpaint, midi, "1-2,3-4", 0), "give one range like 5-8"),
        (lambda: run(app.generate, 4, "4/4", 0, temperature=3.0), "Temperature 3.0 is outside the allowed range 0.1-2.0"),
        (lambda: run(app.generate, 4, "4/4", 0, cfg=11), "Cfg (guidance scale) 11.0 is outside the allowed range 0.0-10.0"),
        (lambda: run(app.generate, 4, "5/3", 0), "Time signature 5/3: the denominator must be one of"),
        (lambda: run(app.generate, 4, "abc", 0), "Time signature must look like 4/4 or 6/8"),
        (lambda: run(app.generate, 4, "4/4", 0, iterations="8,4"), "Iterations: give one count per level (3 levels)"),
        (lambda: run(app.generate, 4, "4/4", 0, density="1,,x"), "Density curve, bar 3: 'x' is not a number"),
        (lambda: run(app.generate, 4, "4/4", 0, density="1,,2"), "give one per bar"),
        (lambda: run(app.generate, 4, "4/4", 0, density="9"), "Density curve, bar 1: 9.0 is outside the allowed range 0.0-4.0"),
        (lambda: run(app.generate, 300, "4/4", 0), "Bars 300 is outside the allowed range 1-256"),
        (lambda: run(app.continue_piece, midi, 0, 0), "Bars to add 0 is outside the allowed range 1-252"),
        (lambda: run(app.generate, 4, "4/4", 2**70), "Seed 1180591620717411303424 is outside the allowed range 0-"),
    ]
    for call, words in cases:
        with pytest.raises(gr.Error, match=re.escape(words)):
            call()


# what a web client can send for any field instead of what the page would: each is refused with
# a gr.Error naming the field, never gradio's generic "upstream app has raised an exception"
BAD_VALUES = {
    "abc": "abc", "None": None, "nan": float("nan"), "inf": float("inf"), "-1": -1, "2**70": 2**70,
    "10**5000": 10**5000, "digits": "9" * 100_000, "huge text": "x" * 1_000_000,
}
ALLOWED = {"seed": {"None", "-1"}, "iterations": {"None"}, "density": {"None"}, "tempo": {"None"}}  # random / default
FIELDS = [  # (handler, argument, words the message names it by)
    ("generate", "bars", "bars"), ("generate", "time_signature", "time signature"), ("generate", "seed", "seed"),
    ("generate", "temperature", "temperature"), ("generate", "cfg", "cfg"), ("generate", "iterations", "iterations"),
    ("generate", "refine_ratio", "refine ratio"), ("generate", "density", "density curve"),
    ("generate", "tempo", "tempo curve"),
    ("inpaint", "midi_file", "MIDI file"), ("inpaint", "bars_to_regenerate", "bars to regenerate"),
    ("inpaint", "seed", "seed"), ("inpaint", "density", "density curve"),
    ("continue_piece", "midi_file", "MIDI file"), ("continue_piece", "more_bars", "bars to add"),
    ("continue_piece", "seed", "seed"), ("continue_piece", "tempo", "tempo curve"),
    ("show_selection", "bars_text", "bars to regenerate"),
]


@pytest.fixture(scope="module")
def small_midi(tmp_path_factory):
    from fractalmidi import Piece, write_midi

    piece = Piece.from_bars([(4, 4)] * 4, bpm=120.0, notes=[[60, 0, 4, 80], [64, 16, 20, 80]])
    return str(write_midi(piece, tmp_path_factory.mktemp("small") / "small.mid"))


@pytest.mark.parametrize("handler,field,words", FIELDS, ids=[f"{h}-{f}" for h, f, _ in FIELDS])
def test_web_inputs_are_refused_naming_the_field(app, small_midi, handler, field, words):
    import gradio as gr

    good = dict(bars=4, time_signature="4/4", seed=1, midi_file=small_midi, bars_to_regenerate="2-3", more_bars=2,
                **SAMPLING)
    args = {
        "generate": ["bars", "time_signature", "seed"],
        "inpaint": ["midi_file", "bars_to_regenerate", "seed"],
        "continue_piece": ["midi_file", "more_bars", "seed"],
    }
    for name, value in BAD_VALUES.items():
        if name in ALLOWED.get(field, ()):
            continue
        with pytest.raises(gr.Error) as refused:
            if handler == "show_selection":
                roll = {"bar_starts": [0, 16, 32, 48, 64]}
                app.show_selection(value, roll)
            else:
                kw = dict(good, **{field: value})
                list(getattr(app, handler)(*[kw.pop(a) for a in args[handler]],
                                           **{k: kw[k] for k in SAMPLING}))
        message = refused.value.message
        assert words.lower() in message.lower(), (name, message)
        assert "/tmp" not in message and len(message) < 1000, (name, message)
        assert "Exceeds the limit" not in message and "Overflow" not in message, (name, message)


def test_seed_minus_one_or_empty_is_random(app):
    seeds = {run(app.generate, 2, "4/4", seed)[-1][4].split("seed ")[1].split(":")[0] for seed in (-1, None, -1.0)}
    assert len(seeds) == 3 and all(s.isdigit() for s in seeds)


def test_upload_errors_name_the_file_not_the_server_folder(app, tmp_path):
    import gradio as gr

    folder = tmp_path / "gradio" / "0123456789abcdef"
    folder.mkdir(parents=True)
    bad = folder / "song.mid"
    bad.write_bytes(b"MThd\0\0\0\6garbage")
    for path in (bad, folder / "missing.mid"):
        status = app.load_midi(str(path))[4]
        assert status.startswith("Upload refused") and path.name in status, status
        assert "/tmp" not in status and str(folder) not in status, status
        with pytest.raises(gr.Error) as refused:
            run(app.inpaint, str(path), "1-2", 0)
        assert path.name in refused.value.message and "/" not in refused.value.message.replace("4/4", ""), \
            refused.value.message
    assert app._message(f"{folder}/x.mid: no notes") == "X.mid: no notes"


def test_a_long_upload_renders_at_most_the_audio_bound(app, tmp_path):
    """256 bars at 10 BPM in a MIDI file of a few dozen bytes: 102 minutes of music. The audio
    is its first MAX_AUDIO_SECONDS (plus the tail), the status says so, the MIDI holds it all."""
    from fractalmidi import Piece, write_midi
    from fractalmidi.web.audio import MAX_AUDIO_SECONDS, TAIL_SECONDS

    piece = Piece.from_bars([(4, 4)] * 256, bpm=10.0, notes=[[60, 0, 4, 80], [64, 4092, 4096, 80]])
    assert piece.duration_seconds > 6000
    path = write_midi(piece, tmp_path / "long.mid")
    assert path.stat().st_size < 200
    roll, _, midi, wav, status, _ = app.load_midi(str(path))
    assert read_midi(midi)[0].num_bars == 256  # the download holds the whole piece
    assert f"the first {MAX_AUDIO_SECONDS:.0f} s of 6144 s" in status and "holds the whole piece" in status, status
    with wave.open(wav) as w:
        seconds = w.getnframes() / w.getframerate()
        most = w.getnchannels() * w.getsampwidth() * w.getframerate() * (MAX_AUDIO_SECONDS + TAIL_SECONDS)
    assert MAX_AUDIO_SECONDS - 10 <= seconds <= MAX_AUDIO_SECONDS + TAIL_SECONDS
    assert Path(wav).stat().st_size <= most + 1000
    assert Path(wav).stat().st_mode & 0o777 == Path(midi).stat().st_mode & 0o777  # not mkstemp's 0600


def test_gradio_cache_and_result_folders_are_cleaned(app, tmp_path, monkeypatch):
    frequency, age = app.demo.delete_cache  # gradio removes its copies of results and uploads
    assert 0 < frequency <= age <= 24 * 3600
    monkeypatch.setattr(app, "OUT_ROOT", tmp_path / "out")
    old = app._new_out_dir()
    (old / "x.wav").write_bytes(b"RIFF")
    os.utime(old, (time.time() - app.OUT_MAX_AGE_S - 60,) * 2)
    new = app._new_out_dir()
    assert new.is_dir() and not old.exists()


def test_no_model_gives_a_clear_message(app, tmp_path, model_dir):
    import gradio as gr

    try:
        assert app.load_model(tmp_path / "nothing") is None
        with pytest.raises(gr.Error, match="No model found at .*--model PATH"):
            run(app.generate, 4, "4/4", 0)
    finally:
        app.load_model(model_dir)


def test_selection_and_drawn_curves_reach_python(app):
    import gradio as gr

    def event(**data):
        return gr.EventData(None, data)

    assert app.select_bars(event(first=4, stop=8)) == "5-8"
    assert app.select_bars(event(first=6, stop=6)) == app.NO_CHANGE
    assert app.select_bars(event()) == app.NO_CHANGE
    roll = run(app.generate, 8, "4/4", 0)[-1][0]
    assert app.show_selection("2-3", roll)["selection"] == [1, 3]
    with pytest.raises(gr.Error, match="Bars to regenerate: bars must look like"):
        app.show_selection("nonsense", roll)
    assert app.show_selection("2-3", None) == app.NO_CHANGE  # no piece on the roll: nothing to highlight
    density, tempo = app.drawn_curve(event(curve="density", values=[None, 0.5, 1.25] + [None] * 5))
    assert density == ",0.50,1.25,,,,," and tempo == app.NO_CHANGE
    assert app.drawn_curve(event(curve="tempo", values=[90.4, None])) == (app.NO_CHANGE, "90,")
    assert app.drawn_curve(event(curve="bogus", values=[1])) == (app.NO_CHANGE, app.NO_CHANGE)
    # what a client may send instead of the roll's events: never an exception
    assert app.drawn_curve(event(curve="tempo", values=[float("nan"), float("inf"), 2**70, None])) == (
        app.NO_CHANGE, ",,1180591620717411303424,")
    for data in (dict(curve="tempo", values=["abc"]), dict(curve="tempo", values=[10**5000]),
                 dict(curve="density", values=[1.0] * 100_000), dict(curve=None, values=None)):
        assert app.drawn_curve(event(**data)) == (app.NO_CHANGE, app.NO_CHANGE)
    assert app.drawn_curve(gr.EventData(None, "abc")) == (app.NO_CHANGE, app.NO_CHANGE)
    for first, stop in ((float("nan"), 3), (0, float("inf")), ("abc", None), (0, 2**70), (-1, 3)):
        assert app.select_bars(event(first=first, stop=stop)) == app.NO_CHANGE


def test_osc_generate_and_status(app, tmp_path):
    from fractalmidi.web.osc import FractalOSCServer, OSCParams

    piece = app.osc_generate(OSCParams(temperature=0.8, cfg=1.0, level0=[0.5, 1.5], bars=6))
    assert piece.num_bars == 6
    server = FractalOSCServer(app.osc_generate, port=0, reply_port=free_udp_port(), out_dir=tmp_path)
    app.OSC_SERVER = server
    try:
        server.start()
        server.last_result = (tmp_path / "x.mid", piece)
        params, log, roll, path, shown = app.osc_status("")
        assert f"temperature **{OSCParams().temperature:.2f}**" in params and "listening" in log
        assert roll["bar_starts"][-1] == 6 * 16 and shown == str(tmp_path / "x.mid")
        assert app.osc_status(shown)[2] == app.NO_CHANGE  # shown once, not re-sent every tick
    finally:
        server.stop()
        app.OSC_SERVER = None


def test_audio_soundfont_and_sine_fallback(tmp_path, monkeypatch):
    from fractalmidi.web import audio

    song, _ = read_midi(POP909_SONG)
    piece = song.crop_bars(0, 4)
    if audio.find_soundfont() is not None and shutil.which("fluidsynth"):
        path, how = audio.render_audio(piece, tmp_path / "a.wav")
        assert "TimGM6mb" in how or "sf" in how.lower(), how
        assert "sine" not in how
    monkeypatch.setattr(audio, "find_soundfont", lambda: None)
    path, how = audio.render_audio(piece, tmp_path / "b.wav")
    assert how == audio.SINE_SYNTH
    with wave.open(str(path)) as w:
        data = np.frombuffer(w.readframes(w.getnframes()), "<i2")
        assert abs(w.getnframes() / w.getframerate() - piece.duration_seconds) < 0.5
    assert np.abs(data).max() > 1000  # audible


# ----------------------------------------------------------------------------- served, gradio_client


@pytest.fixture(scope="module")
def served(model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("served")
    osc_port, reply_port = free_udp_port(), free_udp_port()
    with served_app(model_dir, tmp, osc_port, reply_port) as (url, lines):
        yield url, osc_port, lines


@pytest.fixture(scope="module")
def client(served, tmp_path_factory):
    from gradio_client import Client

    return Client(served[0], verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))


def _predict(client, api_name, *args):
    return client.predict(*args, 1.0, 1.5, "", 0.3, "", "", api_name=api_name)


def test_served_app_generate_inpaint_continue(client, tmp_path):
    from gradio_client import handle_file

    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/generate", "/inpaint", "/continue", "/load_midi"} <= set(api)
    roll, view, midi, wav, status = client.predict(8, "4/4", 5, 1.0, 1.5, "", 0.3, "", "", api_name="/generate")
    assert "8 bars" in status and Path(wav).stat().st_size > 1000
    before, _ = read_midi(midi)
    assert [list(n) for n in before.notes.tolist()] == roll["notes"]
    roll2, _, midi2, _, status2 = _predict(client, "/inpaint", handle_file(midi), "2-4", 9)
    after, _ = read_midi(midi2)
    s0, s1 = int(before.bar_starts[1]), int(before.bar_starts[4])
    assert outside(after.notes, s0, s1) == outside(before.notes, s0, s1)
    assert roll2["selection"] == [1, 4]
    roll3, _, midi3, _, status3 = _predict(client, "/continue", handle_file(midi2), 4, 2)
    longer, _ = read_midi(midi3)
    assert longer.num_bars == 12
    assert set(map(tuple, after.notes.tolist())) <= set(map(tuple, longer.notes.tolist()))


def test_served_app_refuses_a_bad_upload(client, tmp_path):
    from gradio_client import handle_file

    bad = tmp_path / "bad.mid"
    bad.write_text("not midi")
    out = client.predict(handle_file(str(bad)), api_name="/load_midi")
    assert out[4].startswith("Upload refused") and "not a MIDI file" in out[4]
    with pytest.raises(Exception, match="not a MIDI file"):
        _predict(client, "/inpaint", handle_file(str(bad)), "1-2", 0)


def test_served_app_names_the_field_of_a_bad_value(client):
    """Through gradio's own input handling: values the page never sends reach the handler's
    check, which names the field (not "upstream app has raised an exception")."""
    good = [4, "4/4", 1, 1.0, 1.5, "", 0.3, "", ""]
    for i, value, words in ((0, "abc", "bars"), (0, None, "bars"), (2, "abc", "seed"), (2, 2**70, "seed"),
                            (3, None, "temperature"), (4, "abc", "cfg"), (1, "abc", "time signature"),
                            (6, 1e300, "refine ratio")):
        args = list(good)
        args[i] = value
        with pytest.raises(Exception, match=f"(?i){words}"):
            client.predict(*args, api_name="/generate")
    # NaN, which gradio_client will not send: a raw call (JSON as Python writes it)
    import httpx

    url = client.src.rstrip("/") + "/gradio_api/call/generate"
    body = '{"data": [4, "4/4", NaN, 1.0, 1.5, "", 0.3, "", ""]}'
    event = httpx.post(url, content=body, headers={"Content-Type": "application/json"}).json()["event_id"]
    stream = httpx.get(f"{url}/{event}", timeout=RESULT_TIMEOUT_S).text
    assert "event: error" in stream and "Seed must be a whole number" in stream, stream


def test_served_app_sixteen_generations_at_once(client):
    jobs = [client.submit(4, "4/4", seed, 1.0, 1.5, "", 0.3, "", "", api_name="/generate") for seed in range(16)]
    deadline = time.monotonic() + RESULT_TIMEOUT_S  # one bound for all 16, not a per-job speed
    results = [job.result(timeout=max(1.0, deadline - time.monotonic())) for job in jobs]
    assert all("4 bars" in r[4] for r in results)
    assert len({r[2] for r in results}) == 16  # each its own file
    assert [f"seed {s}" in r[4] for s, r in enumerate(results)] == [True] * 16  # each its own request
    notes = {tuple(map(tuple, r[0]["notes"])) for r in results}
    assert len(notes) == 16  # 16 different seeds, 16 different pieces


def test_served_app_runs_the_osc_server(served, client):
    from pythonosc.udp_client import SimpleUDPClient

    url, osc_port, lines = served
    assert any(f"OSC server on 127.0.0.1:{osc_port}" in line for line in lines)
    osc = SimpleUDPClient("127.0.0.1", osc_port)
    # one server thread handles these in the order sent, so the generation sees both parameters
    osc.send_message("/fractal/param/bars", 3)
    time.sleep(0.0005)  # paced
    osc.send_message("/fractal/param/temperature", 0.7)
    time.sleep(0.0005)
    osc.send_message("/fractal/generate", [])
    deadline, roll, path = time.monotonic() + OSC_TIMEOUT_S, None, None
    while time.monotonic() < deadline:
        params, log, new_roll, new_path = client.predict(api_name="/osc_status")
        roll, path = new_roll or roll, new_path or path  # the result is sent once, then "no change"
        if path and "generated 3 bars" in log:  # the log line follows the result
            break
        time.sleep(0.3)
    assert "temperature **0.70**" in params and "bars **3**" in params
    assert "generated 3 bars" in log
    assert path.endswith(".mid") and read_midi(path)[0].num_bars == 3
    assert roll["bar_starts"][-1] == 3 * 16
    loaded = client.predict(api_name="/open_osc_result")
    assert "Loaded fractal_" in loaded[4]
