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


# --------------------------------------------------------------------------- melody, repetition, Frechet
def test_top_voice_of_a_melody_over_chords():
    # melody C5 held over 8 steps while a chord below re-strikes: one top-voice note; then the
    # melody stops and the chord's next strike (top G4) takes over; then D5 struck twice
    notes = [[72, 0, 8, 90], [60, 0, 4, 60], [67, 0, 4, 60], [60, 4, 8, 60], [67, 4, 8, 60],
             [60, 8, 12, 60], [67, 8, 12, 60], [74, 12, 14, 90], [74, 14, 16, 90], [55, 14, 16, 60]]
    piece = Piece.from_bars([(4, 4)], notes=notes)
    np.testing.assert_array_equal(M.top_voice(piece), [[72, 0], [67, 8], [74, 12], [74, 14]])
    # sampled at onset steps only: a held lower note does not become the top when the melody
    # stops with no new onset (the melody then continues at step 12 from 72 directly)
    notes = [[72, 0, 8, 90], [60, 0, 12, 60], [74, 12, 16, 90]]
    np.testing.assert_array_equal(M.top_voice(Piece.from_bars([(4, 4)], notes=notes)), [[72, 0], [74, 12]])
    assert M.top_voice(Piece.from_bars([(4, 4)])).shape == (0, 2)


def test_scale_is_all_steps():
    # C major scale up and down: steps of 1 and 2 semitones
    pitches = [60, 62, 64, 65, 67, 69, 71, 72, 71, 69, 67, 65, 64, 62, 60]
    notes = [[p, 2 * i, 2 * i + 2, 90] for i, p in enumerate(pitches)]
    share, leap = M.melody_motion(Piece.from_bars([(4, 4)] * 2, notes=notes))
    assert share == 1.0 and leap == pytest.approx(np.mean(np.abs(np.diff(pitches))))
    # chromatic scale with a bass note under every note: the top voice is the scale, leap 1
    notes = [[60 + i, i, i + 1, 90] for i in range(12)] + [[36, i, i + 1, 90] for i in range(12)]
    assert M.melody_motion(Piece.from_bars([(4, 4)], notes=notes)) == (1.0, 1.0)
    # whole-tone scale: leap 2, still steps; octave leaps: share 0, leap 12
    notes = [[60 + 2 * i, i, i + 1, 90] for i in range(6)]
    assert M.melody_motion(Piece.from_bars([(4, 4)], notes=notes)) == (1.0, 2.0)
    notes = [[60 + 12 * (i % 2), i, i + 1, 90] for i in range(6)]
    assert M.melody_motion(Piece.from_bars([(4, 4)], notes=notes)) == (0.0, 12.0)
    assert all(math.isnan(x) for x in M.melody_motion(Piece.from_bars([(4, 4)], notes=[[60, 0, 4, 90]])))


def test_melody_track_is_used_when_given():
    melody = [[72, 0, 4, 90], [74, 4, 8, 90], [76, 8, 12, 90]]
    accomp = [[84, 0, 2, 60], [48, 4, 8, 60], [84, 8, 12, 60]]  # a high accompaniment note on top
    piece = Piece.from_bars([(4, 4)], notes=melody + accomp)
    row = M.evaluate_piece(piece, melody=piece.replace_notes(np.array(melody)))
    assert row["melody_step_share"] == 1.0 and row["melody_mean_leap"] == 2.0
    top = M.evaluate_piece(piece)  # top voice: 84, 74, 84 -> leaps 10, 10
    assert top["melody_step_share"] == 0.0 and top["melody_mean_leap"] == 10.0


def one_bar_riff(n_bars: int, riff=((60, 0), (64, 4), (67, 8), (72, 12))) -> Piece:
    notes = [[p, 16 * b + s, 16 * b + s + 2, 90] for b in range(n_bars) for p, s in riff]
    return Piece.from_bars([(4, 4)] * n_bars, notes=notes)


def test_one_bar_repeated_is_all_repeats():
    rate, sim = M.bar_repetition(one_bar_riff(8))
    assert rate == 1.0 and sim == 1.0
    j = M.bar_jaccard(one_bar_riff(3))
    np.testing.assert_array_equal(j, np.ones((3, 3)))


def test_random_bars_do_not_repeat():
    rng = np.random.default_rng(0)
    notes = [[int(rng.integers(40, 90)), 16 * b + s, 16 * b + s + 1, 90]
             for b in range(16) for s in sorted(rng.choice(16, 6, replace=False))]
    notes, _ = normalize_notes(np.array(notes))
    rate, sim = M.bar_repetition(Piece.from_bars([(4, 4)] * 16, notes=notes))
    assert rate == 0.0 and sim < 0.2


def test_bar_similarity_by_hand():
    # bars A B A' C: A' shares 3 of A's 4 cells plus one of its own -> Jaccard 3/5 = 0.6 < 0.7;
    # A (bar 0) vs C (bar 3): disjoint; neighbours are never compared
    a = [(60, 0), (64, 4), (67, 8), (72, 12)]
    a2 = [(60, 0), (64, 4), (67, 8), (71, 12)]
    b, c = [(50, 2)], [(80, 6)]
    notes = [[p, 16 * k + s, 16 * k + s + 1, 90] for k, bar in enumerate([a, b, a2, c]) for p, s in bar]
    piece = Piece.from_bars([(4, 4)] * 4, notes=notes)
    assert M.bar_jaccard(piece)[0, 2] == pytest.approx(0.6)
    rate, sim = M.bar_repetition(piece)
    # best: bar0 0.6 (bar2), bar1 0 (bar3), bar2 0.6 (bar0), bar3 0 (bar0, bar1)
    assert rate == 0.0 and sim == pytest.approx(0.3)
    # bars of different lengths compare on their own cells: a 3/4 bar holding A's first 3 cells
    notes = [[p, s, s + 1, 90] for p, s in a] + [[50, 18, 19, 90]] + [[p, 32 + s, 33 + s, 90] for p, s in a[:3]]
    piece = Piece.from_bars([(4, 4), (4, 4), (3, 4)], notes=notes)
    assert M.bar_jaccard(piece)[0, 2] == pytest.approx(0.75)
    assert M.bar_repetition(piece) == (1.0, 0.75)  # bar 1 has no partner 2+ bars away
    # silence repeating is no repeat; too few bars is NaN
    assert all(math.isnan(x) for x in M.bar_repetition(Piece.from_bars([(4, 4)] * 4, notes=[[60, 0, 1, 90]])))
    assert all(math.isnan(x) for x in M.bar_repetition(one_bar_riff(2)))


def test_bar_features():
    piece = one_bar_riff(2)
    f = M.bar_features(piece)
    assert f.shape == (2, len(M.FEATURE_NAMES)) == (2, 33)
    row = dict(zip(M.FEATURE_NAMES, f[0]))
    assert row["pc_0"] == 0.5 and row["pc_4"] == row["pc_7"] == 0.25
    assert [row[f"onset_{k}"] for k in range(16)] == [1, 0, 0, 0] * 4
    assert row["onsets_per_step"] == 0.25 and row["lowest_pitch_oct"] == 5.0
    assert row["mean_pitch_oct"] == pytest.approx(263 / 4 / 12) and row["range_oct"] == 1.0
    assert row["polyphony"] == 1.0
    # a 3/4 bar spreads its 12 steps over the 16 slots; an empty bar gives no row
    p3 = Piece.from_bars([(3, 4), (4, 4)], notes=[[60, 0, 1, 90], [60, 6, 7, 90]])
    f3 = M.bar_features(p3)
    assert f3.shape == (1, 33) and f3[0, 12 + 0] == 1 and f3[0, 12 + 8] == 1


def test_frechet_distance():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 5)) @ rng.normal(size=(5, 5))
    assert M.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-4)
    shifted = [M.frechet_distance(x, x + d) for d in (0.5, 1.0, 2.0)]
    assert shifted == pytest.approx([5 * 0.25, 5 * 1.0, 5 * 4.0], rel=1e-3)  # ||shift||^2
    # two Gaussians with diagonal covariances: sum of (sd_a - sd_b)^2 for the trace term
    a, b = rng.normal(size=(20000, 3)), 2 * rng.normal(size=(20000, 3))
    assert M.frechet_distance(a, b) == pytest.approx(3.0, rel=0.05)
    assert math.isnan(M.frechet_distance(x[:1], x))


def test_feature_frechet_of_pieces():
    songs = [load_pop909_piece()]
    assert M.feature_frechet_distance(songs, songs) == pytest.approx(0.0, abs=1e-4)
    up = [songs[0].transpose(7)[0]]
    assert M.feature_frechet_distance(songs, up) > 0.1
    riffs = [one_bar_riff(8)]
    assert M.feature_frechet_distance(songs, riffs + [one_bar_riff(4, ((48, 0), (55, 8)))]) > M.feature_frechet_distance(songs, up)


# --------------------------------------------------------------------------- chord-tone share
def test_chord_pitch_classes():
    from fractalmidi.structure import QUALITIES, QUALITY_ID, chord_pitch_classes

    assert chord_pitch_classes(0, "maj") == {0, 4, 7}
    assert chord_pitch_classes(9, "min7") == {9, 0, 4, 7}
    assert chord_pitch_classes(5, "maj", 9) == {5, 9, 0}  # F/A
    assert chord_pitch_classes(0, "maj", 10) == {0, 4, 7, 10}  # C/Bb: the bass sounds too
    assert chord_pitch_classes(7, QUALITY_ID["7"]) == {7, 11, 2, 5}
    assert chord_pitch_classes(-1, "N") == chord_pitch_classes(0, -1) == frozenset()
    assert all(chord_pitch_classes(0, q) for q in QUALITIES)


def chord_grid(n_bars: int, chord=(0, 0, 0)) -> np.ndarray:
    """(4 * n_bars, 3) per-beat chords: one chord (root, quality id, bass) on every beat."""
    return np.tile(np.asarray(chord, np.int64), (4 * n_bars, 1))


def test_strong_beats_are_1_and_3_in_4_4_and_the_downbeat_elsewhere():
    p = Piece.from_bars([(4, 4), (3, 4), (6, 8), (4, 4)], bpm=120, notes=np.zeros((0, 4), np.int64))
    assert M.strong_beat_steps(p).tolist() == [0, 8, 16, 28, 40, 48]


def test_chord_tones_on_strong_beats_give_1_and_others_0():
    c_major = chord_grid(2)  # C:maj on every beat of 2 bars
    tones = piece_44([(60, 0, 4, 90), (64, 8, 12, 90), (67, 16, 20, 90), (72, 24, 28, 90)])
    assert M.chord_tone_share(tones, c_major) == 1.0
    others = piece_44([(62, 0, 4, 90), (65, 8, 12, 90), (69, 16, 20, 90), (71, 24, 28, 90)])
    assert M.chord_tone_share(others, c_major) == 0.0
    # only strong-beat onsets count: non-chord tones on beats 2 and 4 and off the beat change nothing
    passing = piece_44([(60, 0, 2, 90), (61, 2, 4, 90), (62, 4, 8, 90), (64, 8, 12, 90), (66, 12, 16, 90)])
    assert M.chord_tone_share(passing, c_major) == 1.0
    # half the strong-beat notes in the chord; a note over no chord (N) is left out
    half = piece_44([(60, 0, 4, 90), (62, 8, 12, 90), (61, 16, 20, 90)])
    chords = c_major.copy()
    chords[4] = (-1, -1, -1)
    assert M.chord_tone_share(half, chords) == 0.5
    # chords as (root, quality name, bass) triples; melody given apart from the piece
    assert M.chord_tone_share(half, [(9, "min", 9)] * 4, melody=[(69, 0), (62, 8)]) == 0.5
    # the top voice is the melody: chord tones below it do not count
    chordal = piece_44([(48, 0, 16, 90), (52, 0, 16, 90), (62, 0, 8, 90), (60, 8, 16, 90)])
    assert M.chord_tone_share(chordal, chord_grid(1)) == 0.5
    assert math.isnan(M.chord_tone_share(piece_44([(60, 4, 8, 90)]), c_major))  # no strong-beat note
    assert math.isnan(M.chord_tone_share(tones, chord_grid(2, (-1, -1, -1))))  # no chords


def test_chord_tone_share_in_3_4_counts_the_downbeat_only():
    p = Piece.from_bars([(3, 4)] * 2, bpm=120, notes=[(60, 0, 4, 90), (61, 8, 12, 90), (62, 12, 16, 90)])
    assert M.chord_tone_share(p, chord_grid(2)) == 0.5  # steps 0 (C) and 12 (D); step 8 is beat 3 of 3/4


def test_chord_tone_share_of_pop909_song_001():
    """Song 001's MELODY track against its aligned annotated chords: 20 of its 46 strong-beat
    notes are chord tones. It is the lowest of the test songs (002: 0.79, 003: 0.91, 267: 0.54):
    its chorus leans on the major seventh over B:maj (IV of Gb) and the seventh over Bb:min
    (iii), which the annotations write as triads."""
    from fractalmidi.midi_io import read_midi_tracks
    from fractalmidi.structure import align_song

    data = Path(__file__).resolve().parent / "data"
    a = align_song(POP909_MIDI, data / "pop909-structure" / "001")
    assert a.aligned_well
    melody = dict(read_midi_tracks(POP909_MIDI, steps_per_beat=4)[0])["MELODY"]
    chords = np.stack([a.beat_root, a.beat_quality, a.beat_bass], axis=1)
    share = M.chord_tone_share(melody, chords)
    assert share == pytest.approx(20 / 46)
    assert M.chord_tone_share(melody, chords, melody=a.melody) == pytest.approx(share)  # annotated melody agrees
    # the other aligned test songs
    for song, low in (("002", 0.7), ("003", 0.85)):
        a = align_song(data / "pop909" / song / f"{song}.mid", data / "pop909-structure" / song)
        melody = dict(read_midi_tracks(data / "pop909" / song / f"{song}.mid", steps_per_beat=4)[0])["MELODY"]
        assert low < M.chord_tone_share(melody, np.stack([a.beat_root, a.beat_quality, a.beat_bass], 1)) <= 1.0
