"""Tests for fractalmidi.piece: the grid representation (notes, bars, tempo, roll, structure)."""

import numpy as np
import pytest

from fractalmidi.errors import InputError
from fractalmidi.piece import PIANO_RANGE, Piece, bar_length_steps, normalize_notes, roll_to_notes


def random_notes(rng, num_steps: int, count: int, pitch_range=PIANO_RANGE, repeats: int = 10) -> np.ndarray:
    """Random normalized notes, plus back-to-back repeats of one pitch (a note ending on the
    very step the next one of its pitch starts)."""
    lo, hi = pitch_range
    s = rng.integers(0, num_steps - 1, count)
    e = np.minimum(num_steps, s + rng.integers(1, 12, count))
    rows = np.stack([rng.integers(lo, hi + 1, count), s, e, rng.integers(1, 128, count)], axis=1)
    p = int(rng.integers(lo, hi + 1))
    t = np.arange(repeats + 1) * 2
    chain = np.stack([np.full(repeats, p), t[:-1], t[1:], rng.integers(1, 128, repeats)], axis=1)
    notes, _ = normalize_notes(np.concatenate([rows, chain]))
    return notes


def piece_44(bars=4, notes=None, bpm=120.0, spb=4) -> Piece:
    return Piece.from_bars([(4, 4)] * bars, bpm=bpm, notes=notes, steps_per_beat=spb)


# --------------------------------------------------------------------------- piano roll
@pytest.mark.parametrize("seed", range(6))
def test_roll_round_trip_random_notes(seed):
    rng = np.random.default_rng(seed)
    piece = piece_44(bars=8)
    notes = random_notes(rng, piece.num_steps, 200)
    piece = piece.replace_notes(notes)
    roll = piece.to_roll()
    assert roll.shape == (3, 128, 88) and roll.dtype == np.uint8
    np.testing.assert_array_equal(roll_to_notes(roll, PIANO_RANGE[0]), piece.notes)
    np.testing.assert_array_equal(piece.with_roll(roll).notes, piece.notes)


def test_repeated_notes_stay_separate_thanks_to_the_onset_channel():
    notes = [[60, 0, 4, 80], [60, 4, 8, 90], [60, 8, 9, 100], [60, 9, 16, 110]]
    piece = piece_44(bars=1, notes=notes)
    roll = piece.to_roll()
    p = 60 - PIANO_RANGE[0]
    assert roll[1, :, p].tolist() == [1] * 16  # sustain alone would make them one note
    assert np.nonzero(roll[0, :, p])[0].tolist() == [0, 4, 8, 9]
    assert roll[2, [0, 4, 8, 9], p].tolist() == [80, 90, 100, 110]
    assert roll_to_notes(roll).tolist() == notes


def test_roll_channels():
    piece = piece_44(bars=1, notes=[[21, 2, 5, 70], [108, 0, 16, 1]])
    roll = piece.to_roll()
    assert roll[0].sum() == 2 and roll[1].sum() == 3 + 16
    assert roll[1, 2:5, 0].tolist() == [1, 1, 1] and roll[1, 5, 0] == 0
    assert roll[2, 2, 0] == 70 and roll[2, 0, 87] == 1 and roll[2].astype(int).sum() == 71


def test_roll_to_notes_from_model_like_rolls():
    roll = np.zeros((3, 8, 88), np.uint8)
    p = 39  # pitch 60
    roll[1, 2:5, p] = 1  # sustain without onset: a note starts where the sound starts
    roll[0, 6, p] = 1  # onset without sustain: a one-step note, velocity 0 -> default
    assert roll_to_notes(roll, 21, default_velocity=50).tolist() == [[60, 2, 5, 50], [60, 6, 7, 50]]
    assert len(roll_to_notes(np.zeros((3, 8, 88), np.uint8))) == 0


def test_empty_piece_roll():
    piece = piece_44(bars=2)
    assert piece.to_roll().sum() == 0 and piece.to_roll().shape == (3, 32, 88)


# --------------------------------------------------------------------------- normalize_notes
def test_normalize_lengthens_zero_length_notes():
    notes, counts = normalize_notes([[60, 5, 5, 80], [62, 5, 3, 80]])
    assert notes.tolist() == [[60, 5, 6, 80], [62, 5, 6, 80]]
    assert counts == {"lengthened": 2, "duplicate": 0, "truncated": 0}


def test_normalize_keeps_the_longest_then_loudest_of_duplicates():
    notes, counts = normalize_notes([[60, 0, 2, 127], [60, 0, 4, 50], [60, 0, 4, 60], [64, 0, 2, 10]])
    assert notes.tolist() == [[60, 0, 4, 60], [64, 0, 2, 10]]
    assert counts == {"lengthened": 0, "duplicate": 2, "truncated": 0}


def test_normalize_truncates_overlaps_of_one_pitch():
    notes, counts = normalize_notes([[60, 0, 8, 80], [60, 4, 6, 90], [60, 5, 9, 70], [62, 0, 8, 80], [62, 8, 9, 80]])
    assert notes.tolist() == [[60, 0, 4, 80], [62, 0, 8, 80], [60, 4, 5, 90], [60, 5, 9, 70], [62, 8, 9, 80]]
    assert counts == {"lengthened": 0, "duplicate": 0, "truncated": 2}


def test_normalize_sorts_by_start_then_pitch_and_is_idempotent():
    rng = np.random.default_rng(0)
    raw = np.stack([rng.integers(21, 109, 300), rng.integers(0, 64, 300), rng.integers(0, 70, 300),
                    rng.integers(1, 128, 300)], axis=1)
    notes, counts = normalize_notes(raw)
    assert sum(counts.values()) > 0
    assert np.all(np.lexsort((notes[:, 0], notes[:, 1])) == np.arange(len(notes)))
    again, counts2 = normalize_notes(notes)
    np.testing.assert_array_equal(again, notes)
    assert not any(counts2.values())
    assert np.all(notes[:, 2] > notes[:, 1])
    assert normalize_notes(np.zeros((0, 4)))[0].shape == (0, 4)


# --------------------------------------------------------------------------- bars
@pytest.mark.parametrize("sig, spb, steps", [
    ((4, 4), 4, 16), ((3, 4), 4, 12), ((6, 8), 4, 12), ((2, 4), 4, 8), ((7, 8), 4, 14),
    ((3, 16), 4, 3), ((4, 4), 8, 32), ((6, 8), 8, 24), ((3, 16), 8, 6), ((5, 4), 1, 5), ((12, 8), 2, 12),
])
def test_bar_length_steps(sig, spb, steps):
    assert bar_length_steps(*sig, steps_per_beat=spb) == steps


@pytest.mark.parametrize("sig, spb, text", [
    ((3, 16), 2, "does not fit a grid of 2 steps"),
    ((3, 3), 4, "not valid"),
    ((4, 6), 4, "not valid"),
    ((0, 4), 4, "not valid"),
    ((4, 0), 4, "not valid"),
])
def test_bar_length_steps_errors(sig, spb, text):
    with pytest.raises(InputError, match=text) as info:
        bar_length_steps(*sig, steps_per_beat=spb)
    assert f"{sig[0]}/{sig[1]}" in str(info.value)


def test_from_bars():
    piece = Piece.from_bars([(4, 4), (3, 4), (6, 8), (2, 4)], bpm=[120, 90, 90, 60])
    assert piece.bar_starts.tolist() == [0, 16, 28, 40, 48]
    assert piece.time_signatures.tolist() == [[4, 4], [3, 4], [6, 8], [2, 4]]
    assert piece.tempo_steps.tolist() == [0, 16, 40]  # the repeated 90 is merged
    assert piece.tempo_bpm.tolist() == [120, 90, 60]
    assert piece.num_bars == 4 and piece.num_steps == 48 and piece.num_pitches == 88
    assert piece.bar_lengths.tolist() == [16, 12, 12, 8]
    assert piece.bar_of_step([0, 15, 16, 47, 100]).tolist() == [0, 0, 1, 3, 3]
    const = Piece.from_bars([(3, 4)] * 3, bpm=100, steps_per_beat=8)
    assert const.bar_starts.tolist() == [0, 24, 48, 72] and const.tempo_bpm.tolist() == [100]
    with pytest.raises(InputError, match="bpm has 2 values for 3 bars"):
        Piece.from_bars([(4, 4)] * 3, bpm=[100, 110])
    with pytest.raises(InputError, match="3/16"):
        Piece.from_bars([(3, 16)], steps_per_beat=2)


# --------------------------------------------------------------------------- tempo and structure
def test_step_times_and_duration():
    piece = Piece.from_bars([(4, 4), (4, 4)], bpm=[120, 60])
    t = piece.step_times()
    assert len(t) == 33 and t[16] == pytest.approx(2.0) and t[32] == pytest.approx(6.0)
    assert piece.duration_seconds == pytest.approx(6.0)
    assert piece.step_bpm().tolist() == [120.0] * 16 + [60.0] * 16


def test_structure_tempo_and_density():
    # bar 1 (3/4): 90 BPM for 6 steps, 100 BPM for 6 steps -> 3 beats in 1.0 + 0.9 s
    notes = [[60, 0, 2, 80], [64, 0, 2, 80], [67, 0, 2, 80], [60, 6, 12, 80],  # 4 onsets in bar 1
             [62, 12, 13, 80], [62, 13, 14, 80]]  # 2 onsets in bar 2
    piece = Piece(notes, [0, 12, 28, 36], [(3, 4), (4, 4), (2, 4)], [0, 6, 12], [90.0, 100.0, 80.0])
    s = piece.structure()
    np.testing.assert_allclose(s["tempo"], [60 * 3 / 1.9, 80.0, 80.0])
    np.testing.assert_allclose(s["density"], [4 / 12, 2 / 16, 0.0])
    assert s["numerator"].tolist() == [3, 4, 2] and s["denominator"].tolist() == [4, 4, 4]
    assert s["length"].tolist() == [12, 16, 8]
    assert piece.bar_onsets().tolist() == [4, 2, 0]


def test_structure_full_bar_of_sixteenths_has_density_one():
    notes = [[60, i, i + 1, 80] for i in range(16)]
    piece = piece_44(bars=2, notes=notes, bpm=[100, 130])
    np.testing.assert_allclose(piece.bar_density(), [1.0, 0.0])
    np.testing.assert_allclose(piece.bar_tempo(), [100.0, 130.0])


def test_merge_repeated_tempo_events():
    piece = Piece(np.zeros((0, 4)), [0, 16, 32], [(4, 4)] * 2, [0, 4, 16, 20], [100.0, 100.0, 100.0, 110.0])
    assert piece.tempo_steps.tolist() == [0, 20] and piece.tempo_bpm.tolist() == [100.0, 110.0]


# --------------------------------------------------------------------------- editing
def test_crop_bars():
    notes = [[60, 10, 20, 80],  # starts before the crop: left out
             [62, 16, 20, 81],  # first step of the crop
             [64, 30, 50, 82],  # runs past the crop: end clipped
             [65, 43, 44, 83],  # last step of the crop
             [67, 44, 46, 84]]  # after the crop
    piece = Piece(notes, [0, 16, 28, 44, 60], [(4, 4), (3, 4), (4, 4), (4, 4)],
                  [0, 12, 20, 50], [100.0, 90.0, 80.0, 70.0])
    crop = piece.crop_bars(1, 3)
    assert crop.notes.tolist() == [[62, 0, 4, 81], [64, 14, 28, 82], [65, 27, 28, 83]]
    assert crop.bar_starts.tolist() == [0, 12, 28]
    assert crop.time_signatures.tolist() == [[3, 4], [4, 4]]
    assert crop.tempo_steps.tolist() == [0, 4] and crop.tempo_bpm.tolist() == [90.0, 80.0]
    np.testing.assert_allclose(crop.bar_tempo(), piece.bar_tempo()[1:3])
    whole = piece.crop_bars(0, 4)
    np.testing.assert_array_equal(whole.notes, piece.notes)
    np.testing.assert_array_equal(whole.tempo_bpm, piece.tempo_bpm)
    # a tempo event exactly on the first bar line of the crop
    assert piece.crop_bars(3, 4).tempo_bpm.tolist() == [80.0, 70.0]
    for first, stop in [(2, 2), (-1, 2), (0, 5), (3, 1)]:
        with pytest.raises(InputError, match="outside the piece's bars 1-4"):
            piece.crop_bars(first, stop)


def test_transpose_and_range():
    piece = piece_44(bars=1, notes=[[30, 0, 4, 80], [100, 4, 8, 80], [60, 8, 12, 80]])
    assert piece.transpose_range() == (21 - 30, 108 - 100)
    up, lost = piece.transpose(8)
    assert lost == 0 and up.notes[:, 0].tolist() == [38, 108, 68]
    up, lost = piece.transpose(9)
    assert lost == 1 and up.notes[:, 0].tolist() == [39, 69]
    down, lost = piece.transpose(-9)
    assert lost == 0 and down.notes[:, 0].min() == 21
    down, lost = piece.transpose(-10)
    assert lost == 1 and down.notes[:, 0].tolist() == [90, 50]
    np.testing.assert_array_equal(down.tempo_bpm, piece.tempo_bpm)
    assert piece.notes[:, 0].tolist() == [30, 100, 60]  # the original is untouched
    assert piece_44(bars=1).transpose_range() == (0, 0)


def test_custom_pitch_range():
    piece = Piece.from_bars([(4, 4)], notes=[[60, 0, 4, 80]], pitch_range=(48, 72))
    assert piece.num_pitches == 25 and piece.to_roll().shape == (3, 16, 25)
    assert piece.transpose_range() == (-12, 12)
    assert roll_to_notes(piece.to_roll(), 48).tolist() == [[60, 0, 4, 80]]


# --------------------------------------------------------------------------- validation
GOOD = dict(notes=[[60, 0, 4, 80]], bar_starts=[0, 16], time_signatures=[(4, 4)],
            tempo_steps=[0], tempo_bpm=[120.0])


@pytest.mark.parametrize("change, text", [
    (dict(steps_per_beat=0), "steps_per_beat must be >= 1"),
    (dict(pitch_range=(60, 50)), "pitch_range"),
    (dict(pitch_range=(0, 128)), "pitch_range"),
    (dict(bar_starts=[4, 16]), "bar_starts must start at 0"),
    (dict(bar_starts=[0]), "at least one bar"),
    (dict(bar_starts=[0, 16, 16], time_signatures=[(4, 4)] * 2), "increase"),
    (dict(time_signatures=[(4, 4), (4, 4)]), "2 time signatures for 1 bars"),
    (dict(time_signatures=[(3, 4)]), "bar 1: 16 steps do not match time signature 3/4"),
    (dict(time_signatures=[(4, 3)]), "not valid"),
    (dict(tempo_steps=[4]), "tempo_steps must start at 0"),
    (dict(tempo_steps=[0, 0], tempo_bpm=[120.0, 100.0]), "tempo_steps"),
    (dict(tempo_steps=[0, 4]), "one bpm per event"),
    (dict(tempo_bpm=[5.0]), "tempo 5 BPM at bar 1 is outside the allowed range 10-1000 BPM"),
    (dict(tempo_steps=[0, 8], tempo_bpm=[120.0, 2000.0]), "2000 BPM at bar 1"),
    (dict(tempo_bpm=[float("nan")]), "outside the allowed range"),
    (dict(notes=[[20, 0, 4, 80]]), "pitches must lie in 21-108"),
    (dict(notes=[[109, 0, 4, 80]]), "pitches must lie in 21-108"),
    (dict(notes=[[60, -1, 4, 80]]), "0 <= start < end <= 16"),
    (dict(notes=[[60, 12, 17, 80]]), "0 <= start < end <= 16"),
    (dict(notes=[[60, 4, 4, 80]]), "0 <= start < end"),
    (dict(notes=[[60, 0, 4, 0]]), "velocities must lie in 1-127"),
    (dict(notes=[[60, 0, 4, 128]]), "velocities must lie in 1-127"),
    (dict(notes=[[60, 0, 4, 80], [60, 2, 6, 80]]), "overlap"),
    (dict(notes=[[60, 0, 4, 80], [60, 0, 2, 80]]), "overlap"),
])
def test_validation_errors(change, text):
    with pytest.raises(InputError, match=text.replace("(", r"\(")):
        Piece(**{**GOOD, **change})


def test_valid_piece_accepts_unsorted_notes_and_sorts_them():
    piece = Piece(**{**GOOD, "notes": [[64, 8, 12, 80], [60, 0, 4, 80], [48, 8, 9, 1]]})
    assert piece.notes.tolist() == [[60, 0, 4, 80], [48, 8, 9, 1], [64, 8, 12, 80]]
    assert piece.notes.dtype == np.int64 and piece.tempo_bpm.dtype == np.float64
    assert "1 bars" in repr(piece) and "4/4" in repr(piece)
