"""The audio tail: fluidsynth's long release tails are cut after the piece, with a fade."""

import wave

import numpy as np

from fractalmidi.audio import _trim_tail


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
