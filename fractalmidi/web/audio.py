"""Hear a piece: render it to a WAV file through a General MIDI soundfont.

    path, how = render_audio(piece, "out.wav")   # how: "TimGM6mb.sf2 (fluidsynth)", ...

Renderers, first that works:
1. symusic's `Synthesizer` (Prestosynth) with a soundfont file. (symusic 0.6.0's wheel cannot
   return the rendered buffer to Python, "Unable to convert function return value"; a
   one-note probe runs once, so a fixed symusic is used when it lands);
2. the `fluidsynth` command (Debian: `apt-get install fluidsynth`) with the soundfont;
3. a simple additive sine synth in numpy, labelled as such, when no soundfont or no renderer
   is found.

Every renderer is bounded by `max_seconds` (default `MAX_AUDIO_SECONDS`, 10 minutes): a longer
piece is cut to its first `max_seconds` (at a beat) before synthesis, and every WAV is cut to the
piece's duration plus `TAIL_SECONDS`, so a tiny MIDI file of 256 bars at 10 BPM cannot make half
a gigabyte of audio.

The soundfont: `$FRACTALMIDI_SOUNDFONT`, else `TimGM6mb.sf2` that pretty_midi's wheel ships
(`pip install pretty_midi`, 6 MB, General MIDI), else the Debian soundfonts
(timgm6mb-soundfont, fluid-soundfont-gm, musescore-general-soundfont-small).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np

from ..files import atomic_path
from ..piece import Piece

SAMPLE_RATE = 22050
MAX_AUDIO_SECONDS = 600.0  # audio rendered per piece, at most (a longer piece: its first 10 minutes)
TAIL_SECONDS = 2.0  # audio kept after the piece's end: the last notes' release, then a fade
FLUIDSYNTH_TIMEOUT_S = 120  # a slower fluidsynth run falls back to the sine synth
SINE_SYNTH = "simple sine synth (no soundfont found)"

_DEBIAN_SOUNDFONTS = (
    "/usr/share/sounds/sf2/TimGM6mb.sf2",
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf3/MuseScore_General.sf3",
    "/usr/share/sounds/sf2/default-GM.sf2",
)
_symusic_ok: bool | None = None  # whether symusic's synthesizer returns audio (probed once)


def find_soundfont() -> Path | None:
    """The General MIDI soundfont to use, or None (see the module docstring for the order)."""
    env = os.environ.get("FRACTALMIDI_SOUNDFONT")
    if env and Path(env).is_file():
        return Path(env)
    spec = importlib.util.find_spec("pretty_midi")
    if spec is not None and spec.origin:
        sf2 = Path(spec.origin).parent / "TimGM6mb.sf2"
        if sf2.is_file():
            return sf2
    for p in _DEBIAN_SOUNDFONTS:
        if Path(p).is_file():
            return Path(p)
    return None


def describe_renderer() -> str:
    """What `render_audio` will use, in words (for the page)."""
    sf = find_soundfont()
    if sf is None:
        return SINE_SYNTH
    if _symusic_works(sf):
        return f"{sf.name} (symusic)"
    if shutil.which("fluidsynth"):
        return f"{sf.name} (fluidsynth)"
    return "simple sine synth (no soundfont renderer: install fluidsynth)"


def render_audio(piece: Piece, path, sample_rate: int = SAMPLE_RATE,
                 max_seconds: float | None = MAX_AUDIO_SECONDS) -> tuple[Path, str]:
    """Render `piece` to a WAV file at `path` (written atomically). Returns the path and how
    it was rendered, in words (a soundfont's name and renderer, or `SINE_SYNTH`; for a piece
    longer than `max_seconds`, followed by "; the first ... s of ... s": only its beginning is
    rendered, see `first_seconds`). The WAV lasts at most `max_seconds` + `TAIL_SECONDS`
    (None: no bound)."""
    path = Path(path)
    total = piece.duration_seconds
    cut = max_seconds is not None and total > max_seconds
    if cut:
        piece = first_seconds(piece, max_seconds)
    with atomic_path(path, ".wav") as tmp:  # the mode of any new file, not mkstemp's 0600
        how = _render(piece, tmp, sample_rate)
        _trim_tail(tmp, piece.duration_seconds + TAIL_SECONDS)  # every renderer: release tails end here
    if cut:
        how += f"; the first {piece.duration_seconds:.0f} s of {total:.0f} s (audio is rendered for up to {max_seconds:g} s)"
    return path, how


def first_seconds(piece: Piece, seconds: float) -> Piece:
    """The beginning of `piece` that ends by `seconds`, cut at a beat (a quarter note; at least
    one): whole bars, then the cut bar's first beats as bars of 1/4. Notes are clipped at
    the cut. For rendering: the bars' time signatures do not change the sound."""
    times = piece.step_times()
    spb = piece.steps_per_beat
    k = max(int(np.searchsorted(times, seconds, side="right")) - 1, 0)  # times[k] <= seconds
    bar = int(np.searchsorted(piece.bar_starts, k, side="right")) - 1
    if bar >= piece.num_bars:  # the whole piece fits
        return piece
    s0 = int(piece.bar_starts[bar])
    beats = max((k - s0) // spb, 1 if bar == 0 else 0)
    stop = s0 + beats * spb
    bar_starts = np.concatenate([piece.bar_starts[: bar + 1], s0 + spb * np.arange(1, beats + 1)])
    sigs = np.concatenate([piece.time_signatures[:bar].reshape(-1, 2), np.tile([[1, 4]], (beats, 1))])
    notes = piece.notes[piece.notes[:, 1] < stop].copy()
    notes[:, 2] = np.minimum(notes[:, 2], stop)
    keep = piece.tempo_steps < stop
    return Piece(notes, bar_starts, sigs, piece.tempo_steps[keep], piece.tempo_bpm[keep], spb, piece.pitch_range)


def _symusic_works(sf: Path) -> bool:
    """Whether symusic's synthesizer renders here (a one-note probe, run once)."""
    global _symusic_ok
    if _symusic_ok is None:
        try:
            from symusic import Note, Score, Synthesizer, Track

            score = Score(480)
            track = Track("probe", 0, False)
            track.notes.append(Note(0, 240, 60, 64))
            score.tracks.append(track)
            buffer = Synthesizer(str(sf), 8000, 0).render(score, stereo=True)
            _symusic_ok = np.asarray(buffer).size > 0
        except Exception:  # symusic 0.6.0: "Unable to convert function return value to a Python type"
            _symusic_ok = False
    return _symusic_ok


def _render(piece: Piece, out: Path, sample_rate: int) -> str:
    sf = find_soundfont()
    if sf is not None and _symusic_works(sf):
        from symusic import Synthesizer, dump_wav

        from ..midi_io import piece_to_score

        buffer = Synthesizer(str(sf), sample_rate, 0).render(piece_to_score(piece), stereo=True)
        dump_wav(str(out), np.asfortranarray(buffer, dtype=np.float32), sample_rate, True)
        return f"{sf.name} (symusic)"
    fluidsynth = shutil.which("fluidsynth")
    if sf is not None and fluidsynth:
        from ..midi_io import write_midi

        with tempfile.TemporaryDirectory() as d:
            midi = write_midi(piece, Path(d) / "piece.mid")
            cmd = [fluidsynth, "-ni", "-q", "-g", "0.8", "-r", str(sample_rate), "-T", "wav", "-F", str(out), str(sf), str(midi)]
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=FLUIDSYNTH_TIMEOUT_S)
            except (OSError, subprocess.TimeoutExpired):
                done = None
        if done is not None and done.returncode == 0 and out.stat().st_size > 44:
            return f"{sf.name} (fluidsynth)"
    _write_wav(out, sine_synth(piece, sample_rate), sample_rate)
    return SINE_SYNTH if sf is None else "simple sine synth (no soundfont renderer: install fluidsynth)"


def _trim_tail(path: Path, seconds: float, fade: float = 0.5) -> None:
    """Cut a 16-bit WAV to `seconds`, fading out over its last `fade` seconds: fluidsynth
    renders until every voice has died away, which for some piano samples is 6 s or more of
    near-silence after the last bar."""
    with wave.open(str(path), "rb") as r:
        params = r.getparams()
        if params.sampwidth != 2 or params.nframes <= int(seconds * params.framerate):
            return
        keep = int(seconds * params.framerate)
        n = min(int(fade * params.framerate), keep)
        head = r.readframes(keep - n)  # kept as it is
        tail = np.frombuffer(r.readframes(n), dtype="<i2").reshape(-1, params.nchannels).astype(np.float32)
    tail *= np.linspace(1.0, 0.0, len(tail), dtype=np.float32)[:, None]
    with wave.open(str(path), "wb") as w:
        w.setnchannels(params.nchannels)
        w.setsampwidth(2)
        w.setframerate(params.framerate)
        w.writeframes(head)
        w.writeframes(tail.astype("<i2").tobytes())


def sine_synth(piece: Piece, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(S,) float32 mono audio: each note a sine with two overtones and a piano-like decay."""
    times = piece.step_times()  # (T + 1,) seconds
    release = 0.15
    total = int((times[-1] + release) * sample_rate) + 1
    out = np.zeros(total, np.float32)
    for pitch, start, end, velocity in piece.notes.tolist():
        t0, t1 = times[start], times[end]
        # a long note is synthesised for its first 8 s only: the decay has made it silent (e^-24)
        n = int((min(t1 - t0, 8.0) + release) * sample_rate)
        t = np.arange(n, dtype=np.float32) / sample_rate
        f = 440.0 * 2.0 ** ((pitch - 69) / 12)
        tone = np.sin(2 * np.pi * f * t) + 0.3 * np.sin(4 * np.pi * f * t) + 0.1 * np.sin(6 * np.pi * f * t)
        env = np.exp(-3.0 * t) * np.clip((t1 - t0 + release - t) / release, 0.0, 1.0)  # decay, then release
        env *= np.clip(t / 0.005, 0.0, 1.0)  # 5 ms attack: no click
        i = int(t0 * sample_rate)
        out[i : i + n] += (velocity / 127.0) * 0.15 * (tone * env)[: total - i]
    peak = float(np.abs(out).max()) if len(out) else 0.0
    return out / peak * 0.9 if peak > 0.9 else out


def _write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())
