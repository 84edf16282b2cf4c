"""Hear a piece: render it to a WAV file through a General MIDI soundfont.

    path, how = render_audio(piece, "out.wav")   # how: "TimGM6mb.sf2 (fluidsynth)", ...

Renderers, first that works:
1. symusic's `Synthesizer` (Prestosynth) with a soundfont file. (symusic 0.6.0's wheel cannot
   return the rendered buffer to Python, "Unable to convert function return value"; a
   one-note probe runs once, so a fixed symusic is used when it lands);
2. the `fluidsynth` command (Debian: `apt-get install fluidsynth`) with the soundfont;
3. a simple additive sine synth in numpy, labelled as such, when no soundfont or no renderer
   is found.

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

from .piece import Piece

SAMPLE_RATE = 22050
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


def render_audio(piece: Piece, path, sample_rate: int = SAMPLE_RATE) -> tuple[Path, str]:
    """Render `piece` to a WAV file at `path` (written atomically). Returns the path and how
    it was rendered, in words (a soundfont's name and renderer, or `SINE_SYNTH`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".wav", dir=path.parent)
    os.close(fd)
    try:
        how = _render(piece, Path(tmp), sample_rate)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path, how


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

        from .midi_io import piece_to_score

        buffer = Synthesizer(str(sf), sample_rate, 0).render(piece_to_score(piece), stereo=True)
        dump_wav(str(out), np.asfortranarray(buffer, dtype=np.float32), sample_rate, True)
        return f"{sf.name} (symusic)"
    fluidsynth = shutil.which("fluidsynth")
    if sf is not None and fluidsynth:
        from .midi_io import write_midi

        with tempfile.TemporaryDirectory() as d:
            midi = write_midi(piece, Path(d) / "piece.mid")
            cmd = [fluidsynth, "-ni", "-q", "-g", "0.8", "-r", str(sample_rate), "-T", "wav", "-F", str(out), str(sf), str(midi)]
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode == 0 and out.stat().st_size > 44:
            _trim_tail(out, piece.duration_seconds + TAIL_SECONDS)
            return f"{sf.name} (fluidsynth)"
    _write_wav(out, sine_synth(piece, sample_rate), sample_rate)
    return SINE_SYNTH if sf is None else "simple sine synth (no soundfont renderer: install fluidsynth)"


TAIL_SECONDS = 2.0  # audio kept after the piece's end: the last notes' release, then a fade


def _trim_tail(path: Path, seconds: float, fade: float = 0.5) -> None:
    """Cut a 16-bit WAV to `seconds`, fading out over its last `fade` seconds: fluidsynth
    renders until every voice has died away, which for some piano samples is 6 s or more of
    near-silence after the last bar."""
    with wave.open(str(path), "rb") as r:
        params = r.getparams()
        if params.sampwidth != 2 or params.nframes <= int(seconds * params.framerate):
            return
        keep = int(seconds * params.framerate)
        audio = np.frombuffer(r.readframes(keep), dtype="<i2").reshape(-1, params.nchannels).astype(np.float32)
    n = min(int(fade * params.framerate), len(audio))
    audio[len(audio) - n :] *= np.linspace(1.0, 0.0, n, dtype=np.float32)[:, None]
    with wave.open(str(path), "wb") as w:
        w.setnchannels(params.nchannels)
        w.setsampwidth(2)
        w.setframerate(params.framerate)
        w.writeframes(audio.astype("<i2").tobytes())


def sine_synth(piece: Piece, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(S,) float32 mono audio: each note a sine with two overtones and a piano-like decay."""
    times = piece.step_times()  # (T + 1,) seconds
    release = 0.15
    total = int((times[-1] + release) * sample_rate) + 1
    out = np.zeros(total, np.float32)
    for pitch, start, end, velocity in piece.notes.tolist():
        t0, t1 = times[start], times[end]
        n = int((t1 - t0 + release) * sample_rate)
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
