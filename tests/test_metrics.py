"""Tests for fractalmidi.metrics: agreement with muspy's own metrics, hand-computed cases, NaN
cases, summaries and structure adherence."""

import math
from pathlib import Path

import muspy
import numpy as np
import pytest

from fractalmidi import metrics as M
from fractalmidi.errors import InputError
from fractalmidi.piece import Piece, normalize_notes

POP909_MIDI = Path(__file__).resolve().parent / "data/pop909/001/001.mid"
STEPS_PER_BEAT = 4  # a 4/4 bar is 16 steps, muspy's measure_resolution=16
MUSPY_METRICS = ("pitch_entropy", "pitch_class_entropy", "scale_consistency", "polyphony", "empty_beat_rate")


# --------------------------------------------------------------------------- helpers
def piece_44(notes) -> Piece:
    """A 4/4 piece at 4 steps per beat whose bars cover the notes exactly as muspy's measures do:
    muspy takes n_measures = last_end // 16 + 1, so we build that many bars."""
    notes = np.asarray(notes, np.int64).reshape(-1, 4)
    n_bars = int(notes[:, 2].max()) // 16 + 1 if len(notes) else 1
    return Piece.from_bars([(4, 4)] * n_bars, bpm=120, notes=notes, steps_per_beat=STEPS_PER_BEAT)


def to_muspy(piece: Piece) -> muspy.Music:
    """The same notes as a muspy Music with resolution = steps per beat, one non-drum track."""
    notes = [
        muspy.Note(time=int(s), pitch=int(p), duration=int(e - s), velocity=int(v))
        for p, s, e, v in piece.notes
    ]
    return muspy.Music(resolution=piece.steps_per_beat, tracks=[muspy.Track(notes=notes)])


def random_notes(seed: int, n: int, n_steps: int, pitches=(48, 84), max_len: int = 12) -> np.ndarray:
    rng = np.random.default_rng(seed)
    start = rng.integers(0, n_steps, n)
    end = start + rng.integers(1, max_len + 1, n)
    pitch = rng.integers(pitches[0], pitches[1] + 1, n)
    vel = rng.integers(1, 128, n)
    notes, _ = normalize_notes(np.stack([pitch, start, end, vel], axis=1))
    return notes


def assert_matches_muspy(piece: Piece):
    music = to_muspy(piece)
    ours = M.evaluate_piece(piece)
    for name in MUSPY_METRICS:
        theirs = getattr(muspy, name)(music)
        assert ours[name] == pytest.approx(theirs, abs=1e-6), name
    theirs = muspy.groove_consistency(music, measure_resolution=16)
    assert ours["groove_consistency"] == pytest.approx(theirs, abs=1e-6), "groove_consistency"


def load_pop909_piece() -> Piece:
    """POP909 song 001, all tracks, on the 16th grid (steps = round(tick * 4 / tpq))."""
    if not POP909_MIDI.exists():
        pytest.fail(f"POP909 test file not found: {POP909_MIDI} (copy pop909/001/001.mid there)")
    import symusic

    score = symusic.Score(str(POP909_MIDI))
    rows = []
    for track in score.tracks:
        n = track.notes.numpy()
        start = np.round(n["time"].astype(np.int64) * STEPS_PER_BEAT / score.tpq)
        end = np.round((n["time"].astype(np.int64) + n["duration"]) * STEPS_PER_BEAT / score.tpq)
        rows.append(np.stack([n["pitch"].astype(np.int64), start, end, n["velocity"].astype(np.int64)], axis=1))
    notes, _ = normalize_notes(np.concatenate(rows).astype(np.int64))
    # 4/4 bars regardless of the file's meter: the metrics compared here do not depend on it
    return piece_44(notes)


# --------------------------------------------------------------------------- agreement with muspy
@pytest.mark.parametrize("seed", range(8))
def test_random_pieces_match_muspy(seed):
    rng = np.random.default_rng(1000 + seed)
    n_steps = int(rng.integers(16, 200))
    notes = random_notes(seed, int(rng.integers(1, 80)), n_steps, max_len=int(rng.integers(1, 20)))
    assert_matches_muspy(piece_44(notes))


def test_last_note_on_bar_line_matches_muspy():
    # the last note ends exactly at step 32: muspy adds a third (empty) measure, so do we
    notes = np.array([[60, 0, 4, 80], [64, 16, 20, 80], [67, 28, 32, 80]])
    piece = piece_44(notes)
    assert piece.num_bars == 3
    assert_matches_muspy(piece)


def test_pop909_matches_muspy():
    piece = load_pop909_piece()
    assert len(piece.notes) > 500 and piece.num_bars > 20
    assert_matches_muspy(piece)


# --------------------------------------------------------------------------- hand-computed cases
def test_c_major_scale():
    pitches = [60, 62, 64, 65, 67, 69, 71, 72]
    notes = [[p, 2 * i, 2 * i + 2, 90] for i, p in enumerate(pitches)]
    piece = Piece.from_bars([(4, 4)], notes=notes)
    assert M.scale_consistency(piece) == 1.0
    assert M.pitch_entropy(piece) == pytest.approx(3.0)  # 8 distinct pitches, once each
    assert M.polyphony(piece) == 1.0
    assert M.empty_beat_rate(piece) == 0.0


def test_twelve_pitch_classes():
    notes = [[60 + i, i, i + 1, 90] for i in range(12)]
    piece = Piece.from_bars([(4, 4)], notes=notes)
    assert M.pitch_class_entropy(piece) == pytest.approx(math.log2(12))
    assert M.pitch_entropy(piece) == pytest.approx(math.log2(12))
    assert M.scale_consistency(piece) == pytest.approx(7 / 12)


def test_same_pitch_class_in_octaves():
    notes = [[48, 0, 1, 90], [60, 1, 2, 90], [72, 2, 3, 90], [84, 3, 4, 90]]
    piece = Piece.from_bars([(4, 4)], notes=notes)
    assert M.pitch_class_entropy(piece) == 0.0
    assert M.pitch_entropy(piece) == pytest.approx(2.0)


def test_held_chord_polyphony():
    # a C major triad held for 6 steps, then silence: silent steps do not count
    notes = [[60, 2, 8, 90], [64, 2, 8, 90], [67, 2, 8, 90]]
    piece = Piece.from_bars([(4, 4)] * 2, notes=notes)
    assert M.polyphony(piece) == 3.0
    # a triad over steps 0-3 then one note over 4-7: (3 * 4 + 1 * 4) / 8 = 2
    notes = [[60, 0, 8, 90], [64, 0, 4, 90], [67, 0, 4, 90]]
    assert M.polyphony(Piece.from_bars([(4, 4)], notes=notes)) == 2.0


def test_empty_beat_rate_edges():
    # a note on steps 0-3 ends on the beat line at 4: muspy marks beats 0 and 1, of 2 beats
    piece = Piece.from_bars([(4, 4)] * 2, notes=[[60, 0, 4, 90]])
    assert M.empty_beat_rate(piece) == 0.0
    # notes on beat 0 and beat 2, last end 10 -> 3 beats, beat 1 empty; trailing bar ignored
    piece = Piece.from_bars([(4, 4)] * 2, notes=[[60, 0, 2, 90], [62, 8, 10, 90]])
    assert M.empty_beat_rate(piece) == pytest.approx(1 / 3)
    assert M.empty_beat_rate(piece) == pytest.approx(muspy.empty_beat_rate(to_muspy(piece)))


def test_groove_identical_bars():
    pattern = [0, 3, 6, 8, 12]
    notes = [[60, 16 * b + s, 16 * b + s + 1, 90] for b in range(4) for s in pattern]
    assert M.groove_consistency(Piece.from_bars([(4, 4)] * 4, notes=notes)) == 1.0


def test_groove_opposite_bars():
    # bar 1: an onset on every step; bar 2: none -> distance 16 of 16
    notes = [[60, s, s + 1, 90] for s in range(16)]
    piece = Piece.from_bars([(4, 4)] * 2, notes=notes)
    assert M.groove_consistency(piece) == 0.0


def test_groove_mixed_meters():
    # 3/4 (12 steps) with onsets on its 3 beats, then 4/4 (16 steps) with onsets on its 4 beats:
    # the 3/4 pattern is padded to 16 steps, they differ only at step 12 -> 1 - 1/16
    notes = [[60, s, s + 1, 90] for s in (0, 4, 8)] + [[60, 12 + s, 12 + s + 1, 90] for s in (0, 4, 8, 12)]
    piece = Piece.from_bars([(3, 4), (4, 4)], notes=notes)
    assert M.groove_consistency(piece) == pytest.approx(1 - 1 / 16)
    # a third bar of 3/4 like the first: pairs (1/16, 1/16) -> same mean
    notes += [[60, 28 + s, 28 + s + 1, 90] for s in (0, 4, 8)]
    piece = Piece.from_bars([(3, 4), (4, 4), (3, 4)], notes=notes)
    assert M.groove_consistency(piece) == pytest.approx(1 - 1 / 16)
    row = M.evaluate_piece(piece)
    assert set(row) == set(M.METRIC_KEYS) and row["n_bars"] == 3 and row["n_notes"] == 10


def test_groove_uses_the_pieces_bars():
    # two identical bars followed by two silent bars: muspy sees 2 measures (1.0), we see 4
    notes = [[60, s, s + 1, 90] for s in (0, 8, 16, 24)]
    piece = Piece.from_bars([(4, 4)] * 4, notes=notes)
    assert muspy.groove_consistency(to_muspy(piece), measure_resolution=16) == 1.0
    assert M.groove_consistency(piece) == pytest.approx(1 - (0 + 2 / 16 + 0) / 3)


# --------------------------------------------------------------------------- NaN cases
def test_nan_cases():
    empty = Piece.from_bars([(4, 4)] * 2)
    row = M.evaluate_piece(empty)
    for name in MUSPY_METRICS:
        assert math.isnan(row[name]), name
    assert math.isnan(row["groove_consistency"])  # no notes: undefined, as muspy
    assert row["n_notes"] == 0 and row["n_bars"] == 2
    one_bar = Piece.from_bars([(4, 4)], notes=[[60, 0, 4, 90]])
    assert math.isnan(M.groove_consistency(one_bar))


# --------------------------------------------------------------------------- summaries
def test_summarize():
    rows = [{"a": 1.0, "b": math.nan}, {"a": 3.0, "b": math.nan}, {"a": math.nan, "c": 2.0}]
    s = M.summarize(rows)
    assert s["a"] == (2.0, 1.0, 2)  # population std of (1, 3)
    assert math.isnan(s["b"][0]) and math.isnan(s["b"][1]) and s["b"][2] == 0
    assert s["c"] == (2.0, 0.0, 1)
    rows = [M.evaluate_piece(piece_44(random_notes(seed, 30, 64))) for seed in range(3)]
    s = M.summarize(rows)
    assert set(s) == set(M.METRIC_KEYS) and all(count == 3 for _, _, count in s.values())


# --------------------------------------------------------------------------- structure adherence
def test_density_adherence():
    requested = np.array([0.1, 0.2, 0.4, 0.8])
    d = M.density_adherence(requested, 2 * requested + 0.05)
    assert d["pearson_r"] == pytest.approx(1.0) and d["n_bars"] == 4
    assert d["mae"] == pytest.approx(np.mean(requested + 0.05))
    assert M.density_adherence(requested, -requested)["pearson_r"] == pytest.approx(-1.0)
    assert math.isnan(M.density_adherence(requested, np.full(4, 0.3))["pearson_r"])
    with pytest.raises(InputError, match=r"4 bars.*3 bars"):
        M.density_adherence(requested, requested[:3])


def test_tempo_adherence():
    t = M.tempo_adherence([120, 120, 90], [118, 121, 90])
    assert t["mae"] == pytest.approx(1.0) and t["max_abs_error"] == pytest.approx(2.0)


def test_structure_adherence():
    notes = [[60, s, s + 1, 90] for s in (0, 4, 8, 12, 16, 24, 32)]
    piece = Piece.from_bars([(4, 4)] * 3, bpm=[100, 120, 140], notes=notes)
    s = M.structure_adherence(piece, density=piece.bar_density(), tempo=piece.bar_tempo())
    assert s["density_pearson_r"] == pytest.approx(1.0) and s["density_mae"] == 0.0
    assert s["tempo_mae"] == pytest.approx(0.0) and s["tempo_max_abs_error"] == pytest.approx(0.0)
    assert s["n_bars"] == 3
    s = M.structure_adherence(piece, tempo=[100, 120, 150])
    assert "density_mae" not in s and s["tempo_max_abs_error"] == pytest.approx(10.0)
    with pytest.raises(InputError, match=r"density has 2 bars but the piece has 3 bars"):
        M.structure_adherence(piece, density=[0.1, 0.2])
    with pytest.raises(InputError, match=r"tempo has 4 bars but the piece has 3 bars"):
        M.structure_adherence(piece, tempo=[120] * 4)
