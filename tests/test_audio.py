"""The audio tail: fluidsynth's long release tails are cut after the piece, with a fade; and
the bound on how much audio a piece may make, whatever renders it."""

import wave

import numpy as np
import pytest

from fractalmidi import Piece
from fractalmidi.web import audio
from fractalmidi.web.audio import _trim_tail, first_seconds


def _write(path, audio, rate=8000):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(audio.shape[1])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(audio.astype("<i2").tobytes())


def _read(path):
    with wave.open(str(path)) as r:
        return np.frombuffer(r.readframes(r.getnframes()), dtype="<i2").reshape(-1, r.getnchannels()), r.getframerate()


def test_a_long_tail_is_cut_with_a_fade(tmp_path):
    rng = np.random.default_rng(0)
    audio = rng.integers(-20000, 20000, size=(5 * 8000, 2))
    path = tmp_path / "a.wav"
    _write(path, audio)
    _trim_tail(path, 3.0, fade=0.5)
    out, rate = _read(path)
    assert rate == 8000 and out.shape == (3 * 8000, 2)
    assert np.array_equal(out[: int(2.5 * 8000) - 1], audio[: int(2.5 * 8000) - 1])  # untouched before the fade
    assert np.abs(out[-10:]).max() < 100  # faded to silence
    assert np.abs(out[-4000:-3000]).mean() > np.abs(out[-1000:]).mean()  # fading


def test_a_short_file_is_left_alone(tmp_path):
    audio = np.full((8000, 1), 1000)
    path = tmp_path / "b.wav"
    _write(path, audio)
    before = path.read_bytes()
    _trim_tail(path, 3.0)
    assert path.read_bytes() == before


def test_first_seconds_cuts_at_a_beat_and_clips_the_notes():
    # 4/4 at 60 BPM: a beat a second, a bar 4 s; a tempo change in bar 3
    piece = Piece.from_bars([(4, 4)] * 4, bpm=[60.0, 60.0, 120.0, 120.0],
                            notes=[[60, 0, 4, 80], [62, 30, 40, 80], [64, 44, 48, 80]])
    cut = first_seconds(piece, 9.7)  # 8 s of whole bars, then 1.5 s of 120 BPM: three beats
    assert cut.duration_seconds == pytest.approx(9.5)
    assert cut.num_steps == 32 + 12 and cut.time_signatures.tolist() == [[4, 4]] * 2 + [[1, 4]] * 3
    assert cut.notes.tolist() == [[60, 0, 4, 80], [62, 30, 40, 80]]
    assert first_seconds(piece, 100.0) is piece
    assert first_seconds(piece, 0.1).num_steps == 4  # at least one beat
    clipped = first_seconds(piece, 8.0 + 0.6)  # one beat of bar 3: the note held from step 30 is cut at 36
    assert clipped.notes.tolist() == [[60, 0, 4, 80], [62, 30, 36, 80]]


@pytest.mark.parametrize("renderer", ["sine", "soundfont"])
def test_every_renderer_is_bounded_by_max_seconds(tmp_path, monkeypatch, renderer):
    """256 bars at 10 BPM (102 minutes): the WAV holds at most max_seconds and the tail."""
    if renderer == "sine":
        monkeypatch.setattr(audio, "find_soundfont", lambda: None)
    elif audio.find_soundfont() is None or audio.describe_renderer().startswith("simple sine"):
        pytest.skip("no soundfont renderer here")
    piece = Piece.from_bars([(4, 4)] * 256, bpm=10.0, notes=[[60, 0, 4, 80], [64, 4092, 4096, 80], [67, 0, 4096, 60]])
    path, how = audio.render_audio(piece, tmp_path / "long.wav", max_seconds=60)
    assert "the first 60 s of 6144 s" in how, how
    with wave.open(str(path)) as w:
        seconds = w.getnframes() / w.getframerate()
    assert 54 <= seconds <= 60 + audio.TAIL_SECONDS
    assert audio.MAX_AUDIO_SECONDS == 600  # the default bound, as the app says
