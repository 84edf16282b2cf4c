"""Acceptance tests of the MIDI layer (fractalmidi.midi_io): MIDI files <-> Piece on the grid.

- POP909 songs read with their beat files, written and read back: notes, per-bar tempo and
  bars compared with a reference computed here, independently, from symusic's seconds and
  the beat file.
- Files built here with symusic (3/4, 6/8, 4/4 -> 3/4 -> 6/8 -> 2/4 with tempo changes, at
  several ticks per quarter): notes on the grid survive read -> write -> read exactly.
- Rounding, collisions, pitch range, drums, track selection; bad input raises InputError
  naming the file and the problem; write_midi is atomic.
"""

import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from symusic import Note, Score, Tempo, TextMeta, TimeSignature, Track
from symusic.core import ScoreTick

from fractalmidi import midi_io
from fractalmidi.errors import InputError
from fractalmidi.files import atomic_write
from fractalmidi.midi_io import (
    find_beat_file,
    read_beats,
    read_midi,
    read_midi_tracks,
    resolve_beats,
    write_midi,
)
from fractalmidi.piece import Piece, normalize_notes

MIN_SURVIVAL = 0.99  # fraction of a POP909 song's grid notes that must survive the round trip
TEMPO_TOL = 0.5  # BPM


# =========================================================================== helpers
def beat_position(seconds: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Fractional beat index: linear between annotated beats, extrapolated at the first / last
    interval outside them (the reference for the grid, written independently of midi_io)."""
    seconds = np.asarray(seconds, np.float64)
    i = np.searchsorted(times, seconds, side="right") - 1
    i = np.clip(i, 0, len(times) - 2)
    return i + (seconds - times[i]) / (times[i + 1] - times[i])


def grid_round(x):
    return np.floor(np.asarray(x) + 0.5).astype(np.int64)


def reference_grid_notes(midi: Path, beat_file: Path, spb: int = 4) -> Counter:
    """(pitch, onset step, offset step, velocity) of every note of every track, from symusic's
    seconds and the annotated beats; step 0 = annotated beat 0."""
    table = np.loadtxt(beat_file, ndmin=2)
    times = table[:, 0]
    out = Counter()
    for track in Score(str(midi)).to("second").tracks:
        n = track.notes.numpy()
        if len(n["time"]) == 0:
            continue
        on = grid_round(beat_position(n["time"], times) * spb)
        off = grid_round(beat_position(n["time"] + n["duration"], times) * spb)
        off = np.maximum(off, on + 1)
        out.update(zip(n["pitch"].tolist(), on.tolist(), off.tolist(), n["velocity"].tolist()))
    return out


def build_midi(path: Path, tpq: int, notes, sigs=(), tempos=((0, 120.0),), tracks=None, markers=()) -> Path:
    """Write a MIDI file with symusic. `notes`: (pitch, tick, duration ticks, velocity) for one
    track named 'piano', or `tracks`: list of (name, is_drum, notes)."""
    score = Score(tpq)
    for tick, num, den in sigs:
        score.time_signatures.append(TimeSignature(int(tick), int(num), int(den)))
    for tick, qpm in tempos:
        score.tempos.append(Tempo(int(tick), qpm=float(qpm)))
    for tick, text in markers:
        score.markers.append(TextMeta(int(tick), text))
    for name, is_drum, track_notes in tracks if tracks is not None else [("piano", False, notes)]:
        track = Track(name, 0, is_drum)
        for pitch, tick, dur, vel in track_notes:
            track.notes.append(Note(int(tick), int(dur), int(pitch), int(vel)))
        score.tracks.append(track)
    score.dump_midi(str(path))
    return path


def random_grid_notes(rng, num_steps: int, count: int, pitch_range=(21, 108)) -> np.ndarray:
    """Normalized random grid notes, including back-to-back repeats of one pitch; one note
    ends at the last step so the bars read back cover exactly num_steps."""
    rows = []
    for _ in range(count):
        s = int(rng.integers(0, num_steps - 1))
        e = int(min(num_steps, s + rng.integers(1, 9)))
        rows.append((int(rng.integers(pitch_range[0], pitch_range[1] + 1)), s, e, int(rng.integers(1, 128))))
    rows.append((60, 0, 3, 90))
    rows.append((60, 3, 5, 91))  # the same pitch again, back to back
    rows.append((72, num_steps - 2, num_steps, 100))
    notes, _ = normalize_notes(np.array(rows))
    return notes


def seconds_at_quarters(q: np.ndarray, tempo_events) -> np.ndarray:
    """Seconds at positions in quarter notes under tempo events (quarter, BPM), the tempo as
    MIDI stores it (whole microseconds per quarter)."""
    ev_q = np.array([e[0] for e in tempo_events], np.float64)
    ev_bpm = np.array([60e6 / round(60e6 / e[1]) for e in tempo_events])
    sec_at_ev = np.concatenate([[0.0], np.cumsum(np.diff(ev_q) * 60.0 / ev_bpm[:-1])])
    k = np.searchsorted(ev_q, q, side="right") - 1
    return sec_at_ev[k] + (q - ev_q[k]) * 60.0 / ev_bpm[k]


def raises_input_error(match_parts, fn, *args, **kwargs) -> str:
    """Call fn, expect InputError, and check that every part appears in its message."""
    with pytest.raises(InputError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    for part in match_parts:
        assert part in msg, f"{part!r} not in error message {msg!r}"
    return msg


# =========================================================================== POP909
def test_pop909_sample_covers_tempo_changes_pickups_and_odd_bars(pop909_dir):
    songs = sorted(d for d in pop909_dir.iterdir() if (d / "beat_midi.txt").is_file())
    assert len(songs) >= 3, "tests/data/pop909 should hold at least 3 songs"
    assert "001" in [d.name for d in songs]
    multi_tempo = pickup = odd_bar = False
    for d in songs:
        score = Score(str(d / f"{d.name}.mid"))
        multi_tempo |= len({round(t.qpm, 3) for t in score.tempos}) > 1
        down = np.nonzero(np.loadtxt(d / "beat_midi.txt")[:, 2] > 0.5)[0]
        if down[0] > 0 and np.any(np.diff(down) != 4):
            pickup = odd_bar = True
    assert multi_tempo, "no song with several tempi"
    assert pickup and odd_bar, "no song with a pickup and a bar of irregular length"


def test_pop909_round_trip_keeps_notes_tempo_and_bars(pop909_song, tmp_path):
    midi, beat_file = pop909_song / f"{pop909_song.name}.mid", pop909_song / "beat_midi.txt"
    pieces, report = read_midi_tracks(midi, beats=beat_file)
    assert [name for name, _ in pieces] == report.tracks_used
    assert report.grid.startswith("beat file")
    out = write_midi(pieces, tmp_path / "out.mid")
    back, back_report = read_midi_tracks(out, beats=None)  # the written file's own grid
    assert [name for name, _ in back] == [name for name, _ in pieces]
    off = report.first_beat_step  # the step of annotated beat 0 in the piece

    # notes: multiset of (pitch, onset, offset, velocity), reference step 0 = beat 0
    ref = reference_grid_notes(midi, beat_file)
    got = Counter()
    for _, p in back:
        got.update((pi, s - off, e - off, v) for pi, s, e, v in p.notes.tolist())
    survival = sum((ref & got).values()) / sum(ref.values())
    assert survival >= MIN_SURVIVAL, f"{pop909_song.name}: only {survival:.4f} of the notes survived"
    assert back_report.dropped == {} and back_report.changed == {}  # our own file reads back as is

    # bars: lines at the downbeats, pickup beats form a short first bar
    table = np.loadtxt(beat_file)
    times, down = table[:, 0], np.nonzero(table[:, 2] > 0.5)[0]
    lines = np.concatenate([[0], down]) if down[0] > 0 else down  # in beats
    piece = back[0][1]
    assert all(np.array_equal(p.bar_starts, piece.bar_starts) for _, p in back)
    bar_beats = (piece.bar_starts - off) / 4
    inside = bar_beats[(bar_beats >= 0) & (bar_beats <= lines[-1])]
    np.testing.assert_array_equal(inside, lines)
    first = int(np.nonzero(bar_beats == 0)[0][0])
    sigs = piece.time_signatures[first : first + len(lines) - 1]
    np.testing.assert_array_equal(sigs[:, 0], np.diff(lines))  # a bar of k beats is k/4
    assert np.all(sigs[:, 1] == 4)

    # tempo: each bar's tempo is 60 * beats / its duration in the beat file
    want = 60.0 * np.diff(lines) / np.diff(times[lines])
    got_tempo = piece.bar_tempo()[first : first + len(lines) - 1]
    worst = float(np.abs(got_tempo - want).max())
    assert worst < TEMPO_TOL, f"{pop909_song.name}: tempo off by {worst:.4f} BPM"


def test_pop909_merged_read_shares_bars_with_track_read(pop909_dir):
    midi, beat_file = pop909_dir / "001/001.mid", pop909_dir / "001/beat_midi.txt"
    merged, report = read_midi(midi, beats=beat_file)
    tracks, _ = read_midi_tracks(midi, beats=beat_file)
    assert report.tracks_used == ["MELODY", "BRIDGE", "PIANO"]
    assert report.source_notes == sum(len(Score(str(midi)).tracks[k].notes) for k in range(3))
    for _, p in tracks:
        np.testing.assert_array_equal(p.bar_starts, merged.bar_starts)
        np.testing.assert_array_equal(p.tempo_bpm, merged.tempo_bpm)
    # merging can only lose notes (doublings across tracks), never invent them
    assert len(merged.notes) <= sum(len(p.notes) for _, p in tracks)
    assert report.kept_notes == len(merged.notes)
    # the beat grid fits POP909 well (data/README: ~93% of onsets within 0.1 of a 16th)
    assert report.onsets_within_0_1 > 0.8


def test_pop909_tick_grid_read_without_beat_file(pop909_dir):
    piece, report = read_midi(pop909_dir / "001/001.mid", beats=None)  # None: no beat file
    assert report.grid == "ticks (tpq=480)"
    assert piece.num_bars >= 1 and len(piece.notes) > 1000


# =========================================================================== which beat file
def test_read_midi_uses_the_beat_file_beside_it_like_the_command_line(pop909_dir):
    # issue 10: read_midi(path) read POP909 song 001 on its ticks (146 bars of 2/4), while
    # `fractalmidi inspect` used the beat_midi.txt beside it (73 bars of 4/4)
    midi, beat_file = pop909_dir / "001/001.mid", pop909_dir / "001/beat_midi.txt"
    assert resolve_beats(midi) == find_beat_file(midi) == beat_file  # the rule the CLI uses
    piece, report = read_midi(midi)  # beats="auto", the default
    given, _ = read_midi(midi, beats=beat_file)
    assert report.grid == f"beat file {beat_file}"
    assert piece.num_bars == given.num_bars == 73
    assert np.array_equal(piece.notes, given.notes)
    assert np.array_equal(piece.time_signatures, given.time_signatures)
    tracks, track_report = read_midi_tracks(midi)
    assert track_report.grid == report.grid and tracks[0][1].num_bars == 73
    # turned off: the file's own ticks
    for off in (None, False):
        assert resolve_beats(midi, off) is None
        assert read_midi(midi, beats=off)[1].grid == "ticks (tpq=480)"
    assert resolve_beats(midi, str(beat_file)) == beat_file
    with pytest.raises(TypeError, match="auto"):
        resolve_beats(midi, True)


def test_auto_beats_follow_find_beat_file(tmp_path):
    # `<stem>.beats.txt` beside any file; `beat_midi.txt` only beside the single MIDI file of a
    # folder; a file with no beat file beside it is read on its ticks
    beats = "".join(f"{0.25 * i:.3f} 0 {int(i % 3 == 0)}\n" for i in range(40))  # 3/4, 240 BPM
    notes = [(60, 0, 480, 80), (62, 480 * 6, 480, 80)]
    (tmp_path / "a").mkdir()
    alone = build_midi(tmp_path / "a" / "song.mid", 480, notes)
    assert read_midi(alone)[1].grid == "ticks (tpq=480)"
    (tmp_path / "a" / "beat_midi.txt").write_text(beats)
    piece, report = read_midi(alone)
    assert report.grid == f"beat file {tmp_path / 'a' / 'beat_midi.txt'}"
    assert piece.time_signatures[0].tolist() == [3, 4]
    build_midi(tmp_path / "a" / "other.mid", 480, notes)  # two songs: whose beats?
    assert read_midi(alone)[1].grid == "ticks (tpq=480)"
    (tmp_path / "a" / "song.beats.txt").write_text(beats)
    assert read_midi(alone)[1].grid == f"beat file {tmp_path / 'a' / 'song.beats.txt'}"
    assert read_midi(alone, beats=None)[1].grid == "ticks (tpq=480)"


# =========================================================================== synthetic files
# (time signatures as (quarter, num, den), tempi as (quarter, bpm), expected bar lengths at 4
# steps per quarter)
METRES = {
    "3/4": ([(0, 3, 4)], [(0, 100.0)], [12] * 4),
    "6/8": ([(0, 6, 8)], [(0, 72.0), (6, 80.0)], [12] * 4),
    "mixed": (
        [(0, 4, 4), (4, 3, 4), (10, 6, 8), (16, 2, 4)],
        # a change inside bar 2 (quarter 5.5) and others on bar lines
        [(0, 120.0), (4, 90.0), (5.5, 100.0), (10, 140.5), (16, 60.0)],
        [16, 12, 12, 12, 12, 8, 8],
    ),
}


@pytest.mark.parametrize("spb", [4, 8])
@pytest.mark.parametrize("tpq", [480, 384, 96])
@pytest.mark.parametrize("metre", sorted(METRES))
def test_grid_notes_survive_read_write_read(metre, tpq, spb, tmp_path):
    sigs, tempos, lengths4 = METRES[metre]
    lengths = np.array(lengths4) * spb // 4
    num_steps = int(lengths.sum())
    notes = random_grid_notes(np.random.default_rng(tpq + spb), num_steps, 120)
    tps = tpq // spb  # ticks per step
    src = build_midi(
        tmp_path / "src.mid", tpq,
        [(p, s * tps, (e - s) * tps, v) for p, s, e, v in notes],
        sigs=[(q * tpq, n, d) for q, n, d in sigs],
        tempos=[(q * tpq, b) for q, b in tempos],
    )
    piece, report = read_midi(src, steps_per_beat=spb)
    assert report.dropped == {} and report.changed == {} and report.warnings == []
    assert report.onset_error_median == 0.0 and report.onsets_within_0_1 == 1.0
    np.testing.assert_array_equal(piece.notes, notes)
    np.testing.assert_array_equal(piece.bar_lengths, lengths)
    expected_sigs = []
    for k, (q0, n, d) in enumerate(sigs):
        q1 = sigs[k + 1][0] if k + 1 < len(sigs) else num_steps / spb
        expected_sigs += [(n, d)] * round((q1 - q0) * spb / (n * 4 * spb // d))
    np.testing.assert_array_equal(piece.time_signatures, expected_sigs)
    # per-bar tempo = 60 * beats / duration, the duration from the tempo map as MIDI stores it
    bar_q = piece.bar_starts / spb
    want = 60.0 * np.diff(bar_q) / np.diff(seconds_at_quarters(bar_q, tempos))
    np.testing.assert_allclose(piece.bar_tempo(), want, atol=1e-3)

    out = write_midi(piece, tmp_path / "out.mid")
    back, back_report = read_midi(out, steps_per_beat=spb)
    assert back_report.dropped == {} and back_report.changed == {} and back_report.warnings == []
    np.testing.assert_array_equal(back.notes, notes)
    np.testing.assert_array_equal(back.bar_starts, piece.bar_starts)
    np.testing.assert_array_equal(back.time_signatures, piece.time_signatures)
    np.testing.assert_allclose(back.bar_tempo(), want, atol=1e-3)
    assert np.abs(back.bar_tempo() - piece.bar_tempo()).max() < TEMPO_TOL


def test_tempo_change_inside_a_bar_gives_the_bar_mean_tempo(tmp_path):
    # 3/4 bar at 90 BPM for 1.5 quarters, then 100 BPM: 3 beats in 1.0 + 0.9 s
    src = build_midi(
        tmp_path / "t.mid", 480, [(60, 0, 480 * 6, 80)], sigs=[(0, 3, 4)],
        tempos=[(0, 90.0), (720, 100.0)],
    )
    piece, _ = read_midi(src)
    assert list(piece.tempo_steps) == [0, 6] and piece.bar_lengths.tolist() == [12, 12]
    assert piece.bar_tempo()[0] == pytest.approx(60 * 3 / 1.9, abs=1e-3)
    assert piece.bar_tempo()[1] == pytest.approx(100.0, abs=1e-3)


def test_tick_grid_seconds_agree_with_symusic(tmp_path):
    # the first tempo event comes late: MIDI plays 120 BPM until it
    q = 480
    src = build_midi(
        tmp_path / "late.mid", q, [(60, 0, q, 80), (62, 2 * q, q, 80), (64, 5 * q, q, 80), (65, 7 * q, q, 80)],
        tempos=[(2 * q, 60.0), (5 * q, 150.0)],
    )
    piece, _ = read_midi(src)
    assert piece.tempo_steps.tolist() == [0, 8, 20] and piece.tempo_bpm.tolist() == [120.0, 60.0, 150.0]
    seconds = Score(str(src)).to("second").tracks[0].notes.numpy()["time"]
    np.testing.assert_allclose(piece.step_times()[piece.notes[:, 1]], seconds, atol=1e-6)


@pytest.mark.parametrize("spb", [4, 8])
def test_piece_from_bars_writes_and_reads_back(spb, tmp_path):
    sigs = [(4, 4), (3, 4), (6, 8), (2, 4), (7, 8)]
    bpm = [120.0, 95.5, 61.0, 200.0, 42.25]
    base = Piece.from_bars(sigs, bpm=bpm, steps_per_beat=spb)
    piece = base.replace_notes(random_grid_notes(np.random.default_rng(spb), base.num_steps, 60))
    for tpq in (480, 96):
        back, _ = read_midi(write_midi(piece, tmp_path / f"o{tpq}.mid", ticks_per_quarter=tpq), steps_per_beat=spb)
        np.testing.assert_array_equal(back.notes, piece.notes)
        np.testing.assert_array_equal(back.bar_starts, piece.bar_starts)
        np.testing.assert_array_equal(back.time_signatures, piece.time_signatures)
        np.testing.assert_allclose(back.bar_tempo(), bpm, atol=1e-3)


def test_end_marker_keeps_trailing_empty_bars(tmp_path):
    piece = Piece.from_bars([(4, 4)] * 5, bpm=100, notes=[[60, 0, 4, 80]])
    back, _ = read_midi(write_midi(piece, tmp_path / "e.mid"))
    assert back.num_bars == 5 and back.num_steps == 80


def test_bar_lengths_in_steps(tmp_path):
    q = 480
    sigs = [(0, 4, 4), (4 * q, 3, 4), (7 * q, 6, 8), (10 * q, 2, 4)]
    src = build_midi(tmp_path / "b.mid", q, [(60, 0, 12 * q, 80)], sigs=sigs)
    assert read_midi(src)[0].bar_lengths.tolist() == [16, 12, 12, 8]
    assert read_midi(src, steps_per_beat=8)[0].bar_lengths.tolist() == [32, 24, 24, 16]


# =========================================================================== rounding and reports
def test_off_grid_notes_round_to_the_nearest_step(tmp_path):
    # 120 ticks per step at tpq 480
    src = build_midi(tmp_path / "r.mid", 480, [
        (60, 130, 240, 80),  # onset 1.08 -> 1, end 3.08 -> 3
        (62, 170, 240, 80),  # onset 1.42 -> 1
        (64, 190, 250, 80),  # onset 1.58 -> 2, end 3.67 -> 4
        (65, 300, 120, 80),  # onset 2.5 -> 3 (half a step goes to the later line), end 3.5 -> 4
        (67, 480, 20, 80),   # shorter than half a step: one step long
        (69, 1880, 40, 80),  # onset 15.67 -> 16, end 16 -> lengthened to 17
    ])
    piece, report = read_midi(src)
    assert piece.notes.tolist() == [
        [60, 1, 3, 80], [62, 1, 3, 80], [64, 2, 4, 80], [65, 3, 4, 80], [67, 4, 5, 80], [69, 16, 17, 80],
    ]
    assert report.changed == {"lengthened to one step: shorter than half a step": 2}
    assert report.onsets_within_0_1 == pytest.approx(2 / 6)  # 1.08 and 4.0
    assert report.onset_error_median == pytest.approx(np.median([1 / 12, 5 / 12, 5 / 12, 0.5, 0, 1 / 3]))
    assert piece.num_bars == 2


def test_same_pitch_collisions_are_reported(tmp_path):
    src = build_midi(tmp_path / "c.mid", 480, [
        (60, 0, 480, 80),
        (60, 30, 480, 90),  # rounds onto step 0 as well, same length: the louder one is kept
        (62, 0, 960, 80),
        (62, 480, 480, 70),  # starts while the first 62 sounds: that one is shortened
        (64, 1800, 120, 80),
    ])
    piece, report = read_midi(src)
    assert report.source_notes == 5 and report.kept_notes == 4
    assert sum(report.dropped.values()) == 1
    assert any("same pitch and onset step" in k for k in report.dropped)
    assert sum(report.changed.values()) == 1
    assert any(k.startswith("shortened") for k in report.changed)
    assert piece.notes.tolist() == [[60, 0, 4, 90], [62, 0, 4, 80], [62, 4, 8, 70], [64, 15, 16, 80]]


def test_doublings_across_tracks_survive_per_track_read(tmp_path):
    notes = [(60, 0, 480, 80), (64, 480, 480, 80)]
    src = build_midi(tmp_path / "d.mid", 480, None, tracks=[("a", False, notes), ("b", False, notes)])
    merged, report = read_midi(src)
    assert len(merged.notes) == 2 and sum(report.dropped.values()) == 2
    assert "(tracks merged)" in next(iter(report.dropped))
    per_track, report2 = read_midi_tracks(src)
    assert [len(p.notes) for _, p in per_track] == [2, 2] and report2.dropped == {}


def test_pitch_outside_range_is_dropped_with_reason(tmp_path):
    src = build_midi(tmp_path / "p.mid", 480, [(10, 0, 480, 80), (120, 0, 480, 80), (60, 0, 480, 80)])
    piece, report = read_midi(src)
    assert piece.notes[:, 0].tolist() == [60]
    assert report.dropped == {"pitch outside 21-108": 2}
    piece, report = read_midi(src, pitch_range=(0, 127))
    assert len(piece.notes) == 3 and report.dropped == {}


def test_drum_tracks_are_skipped(tmp_path):
    src = build_midi(tmp_path / "drums.mid", 480, None, tracks=[
        ("piano", False, [(60, 0, 480, 80)]),
        ("drums", True, [(36, 0, 120, 100), (38, 480, 120, 100), (42, 960, 120, 100)]),
    ])
    piece, report = read_midi(src)
    assert report.tracks_used == ["piano"] and piece.notes[:, 0].tolist() == [60]
    assert report.dropped == {"drum track": 3}


def test_track_selection_by_name_and_number(tmp_path):
    src = build_midi(tmp_path / "tracks.mid", 480, None, tracks=[
        ("MELODY", False, [(72, 0, 480, 80)]),
        ("PIANO", False, [(48, 0, 480, 80)]),
    ])
    assert read_midi(src, tracks=["piano"])[0].notes[:, 0].tolist() == [48]  # names: any case
    assert read_midi(src, tracks=[0])[0].notes[:, 0].tolist() == [72]
    assert read_midi(src, tracks=["1"])[0].notes[:, 0].tolist() == [48]
    pieces, report = read_midi_tracks(src, tracks=["PIANO", 0])
    assert [name for name, _ in pieces] == ["PIANO", "MELODY"] == report.tracks_used
    raises_input_error(["tracks.mid", "no track named 'strings'", "MELODY", "PIANO"], read_midi, src, tracks=["strings"])
    raises_input_error(["tracks.mid", "no track number 5", "0-1"], read_midi, src, tracks=[5])


def test_notes_before_the_first_annotated_beat_get_bars_before_it(tmp_path):
    # 120 BPM (a quarter = 0.5 s); beats every 0.5 s from 1.0 s, downbeat every 3 beats from
    # beat 1 (a one-beat pickup); a note at 0.25 s is 1.5 beats before beat 0
    src = build_midi(tmp_path / "early.mid", 480, [
        (60, 240, 240, 80), (62, 960, 480, 80), (64, 960 + 480 * 3, 480, 80),
    ])
    beat_file = tmp_path / "beats.txt"
    beat_file.write_text("".join(f"{1.0 + 0.5 * i:.6f} {i % 2} {int(i % 3 == 1)}\n" for i in range(8)))
    piece, report = read_midi(src, beats=beat_file)
    off = report.first_beat_step
    assert off == 12  # one full 3-beat bar added before the pickup
    assert piece.notes.tolist() == [[60, off - 6, off - 4, 80], [62, off, off + 4, 80], [64, off + 12, off + 16, 80]]
    assert piece.bar_starts.tolist()[:4] == [0, off, off + 4, off + 16]
    assert piece.time_signatures.tolist()[:3] == [[3, 4], [1, 4], [3, 4]]
    assert report.warnings and "before" in report.warnings[0]


def test_read_beats_pop909_columns(pop909_dir):
    times, down = read_beats(pop909_dir / "001/beat_midi.txt")
    table = np.loadtxt(pop909_dir / "001/beat_midi.txt")
    np.testing.assert_array_equal(times, table[:, 0])
    np.testing.assert_array_equal(down, table[:, 2] > 0.5)


# =========================================================================== bad input
@pytest.fixture
def good_midi(tmp_path) -> Path:
    return build_midi(tmp_path / "good.mid", 480, [(60, 0, 480, 80), (64, 480, 480, 80)])


def test_text_file_is_not_midi(tmp_path):
    f = tmp_path / "notes.mid"
    f.write_text("this is not a MIDI file\n")
    raises_input_error(["notes.mid", "not a MIDI file"], read_midi, f)


def test_truncated_midi(tmp_path, pop909_dir):
    f = tmp_path / "cut.mid"
    f.write_bytes((pop909_dir / "001/001.mid").read_bytes()[:3000])
    raises_input_error(["cut.mid", "not a readable MIDI file"], read_midi, f)


def test_empty_file(tmp_path):
    f = tmp_path / "empty.mid"
    f.write_bytes(b"")
    raises_input_error(["empty.mid", "empty"], read_midi, f)


def test_missing_file(tmp_path):
    raises_input_error(["nothere.mid", "not found"], read_midi, tmp_path / "nothere.mid")


def test_midi_without_notes(tmp_path):
    f = build_midi(tmp_path / "silent.mid", 480, [])
    raises_input_error(["silent.mid", "no notes"], read_midi, f)
    f = build_midi(tmp_path / "notracks.mid", 480, None, tracks=[])
    raises_input_error(["notracks.mid", "no notes"], read_midi, f)


def test_only_out_of_range_notes(tmp_path):
    f = build_midi(tmp_path / "low.mid", 480, [(5, 0, 480, 80)])
    raises_input_error(["low.mid", "no notes left"], read_midi, f)


@pytest.mark.parametrize("qpm, shown", [(10000.0, "10000 BPM"), (None, "3.57628 BPM")])
def test_absurd_tempo(tmp_path, qpm, shown):
    score = Score(480)
    # None: the longest quarter MIDI can store (0xFFFFFF microseconds), ~3.58 BPM, "0 BPM"
    score.tempos.append(Tempo(0, qpm=qpm) if qpm else Tempo(0, mspq=0xFFFFFF))
    track = Track("piano", 0, False)
    track.notes.append(Note(0, 480, 60, 80))
    score.tracks.append(track)
    f = tmp_path / "tempo.mid"
    score.dump_midi(str(f))
    raises_input_error(["tempo.mid", shown, "outside the allowed range"], read_midi, f)


def test_beat_file_not_found(good_midi, tmp_path):
    raises_input_error(["nobeats.txt", "beat file not found"], read_midi, good_midi, beats=tmp_path / "nobeats.txt")


def test_beat_file_with_non_increasing_times_names_the_line(good_midi, tmp_path):
    f = tmp_path / "beats.txt"
    f.write_text("0.5 0 1\n1.0 1 0\n1.5 0 0\n1.4 1 0\n2.0 0 1\n")
    raises_input_error(["beats.txt", "line 4", "1.4", "does not come after 1.5"], read_midi, good_midi, beats=f)
    # blank lines count as lines
    f.write_text("\n0.5 0 1\n\n1.0 1 0\n1.0 0 0\n")
    raises_input_error(["beats.txt", "line 5"], read_beats, f)


def test_beat_file_with_text_names_the_line(good_midi, tmp_path):
    f = tmp_path / "beats.txt"
    f.write_text("0.5 0 1\n1.0 1 0\nbeat 0 0\n")
    raises_input_error(["beats.txt", "line 3", "expected numbers"], read_midi, good_midi, beats=f)


def test_too_long_file(tmp_path):
    # a stray note 100,000 quarter notes out
    f = build_midi(tmp_path / "long.mid", 480, [(60, 0, 480, 80), (62, 480 * 100_000, 480, 80)])
    raises_input_error(["long.mid", "longer than the limit of 2048 bars"], read_midi, f)
    # over a small max_bars, exactly
    f = build_midi(tmp_path / "ten.mid", 480, [(60, 0, 480, 80), (62, 480 * 39, 480, 80)])  # 10 bars
    assert read_midi(f, max_bars=10)[0].num_bars == 10
    raises_input_error(["ten.mid", "limit of 9 bars"], read_midi, f, max_bars=9)


def test_too_long_file_on_a_beat_grid(tmp_path):
    f = build_midi(tmp_path / "long.mid", 480, [(60, 0, 480, 80), (62, 480 * 100_000, 480, 80)])
    beats = tmp_path / "beats.txt"
    beats.write_text("".join(f"{0.5 * i} 0 {int(i % 4 == 0)}\n" for i in range(16)))
    raises_input_error(["long.mid", "longer than the limit"], read_midi, f, beats=beats)


def test_file_over_max_bytes(good_midi):
    size = good_midi.stat().st_size
    raises_input_error(["good.mid", f"{size} bytes", f"limit of {size - 1} bytes"], read_midi, good_midi, max_bytes=size - 1)
    assert read_midi(good_midi, max_bytes=size)[0].notes.shape == (2, 4)


@pytest.mark.parametrize("division, shown", [
    (b"\x00\x00", ["time division (ticks per quarter note) is 0"]),
    (b"\xe7\x28", ["SMPTE time division", "0xE728", "25 frames per second", "40 ticks per frame"]),
], ids=["zero", "smpte"])
def test_time_division_zero_or_smpte(tmp_path, pop909_dir, division, shown):
    # issue 10: a division of 0 was a ZeroDivisionError (the tick -> step conversion), with or
    # without a beat file (seconds are ticks / division too); symusic refuses SMPTE itself
    f = tmp_path / "division.mid"
    b = (pop909_dir / "001/001.mid").read_bytes()
    f.write_bytes(b[:12] + division + b[14:])
    for beats in (None, pop909_dir / "001/beat_midi.txt"):
        raises_input_error(["division.mid", *shown], read_midi, f, beats=beats)
        raises_input_error(["division.mid", *shown], read_midi_tracks, f, beats=beats)


@pytest.mark.parametrize("tpq", [0, -480, 32768])
def test_write_midi_refuses_ticks_per_quarter_midi_cannot_hold(tmp_path, tpq):
    # 0 wrote every note at tick 0 and a file with division 0; 32768 sets the SMPTE bit
    piece = Piece.from_bars([(4, 4)], bpm=120, notes=[[60, 0, 4, 80]])
    with pytest.raises(InputError, match="ticks per quarter note must be 1-32767"):
        write_midi(piece, tmp_path / "x.mid", ticks_per_quarter=tpq)
    assert not any(tmp_path.iterdir())
    back, _ = read_midi(write_midi(piece, tmp_path / "y.mid", ticks_per_quarter=32764))
    assert back.notes.tolist() == [[60, 0, 4, 80]]


class _UfuncCounter(np.ndarray):
    """Track numbers that count the elements every numpy ufunc (==, <, + ...) reads from them."""

    elements = 0

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        plain = []
        for x in inputs:
            if isinstance(x, _UfuncCounter):
                _UfuncCounter.elements += x.size
                x = x.view(np.ndarray)
            plain.append(x)
        return getattr(ufunc, method)(*plain, **kwargs)


def test_many_tracks_are_split_in_linear_work(tmp_path, monkeypatch):
    # issue 10: 65,535 tracks took 147 s: each track's notes were picked by comparing every
    # note's track number with it (tracks x notes). Same notes as each track read alone.
    rng = np.random.default_rng(7)
    n_tracks, per_track = 5000, 3
    score = Score(480)
    for k in range(n_tracks):
        track = Track(f"t{k}", 0, False)
        track.notes = Note.from_numpy(
            time=rng.integers(0, 480 * 16, per_track).astype(np.int32),
            duration=rng.integers(1, 960, per_track).astype(np.int32),
            pitch=rng.integers(50, 53, per_track).astype(np.int8),  # few pitches: collisions
            velocity=rng.integers(1, 128, per_track).astype(np.int8),
        )
        score.tracks.append(track)
    for note in score.tracks[3].notes:  # below the piano: a track left empty keeps its place
        note.pitch = 5
    src = tmp_path / "many.mid"
    score.dump_midi(str(src))

    real = midi_io._note_arrays
    monkeypatch.setattr(midi_io, "_note_arrays", lambda tracks: (*real(tracks)[:4], real(tracks)[4].view(_UfuncCounter)))
    _UfuncCounter.elements = 0
    pieces, report = read_midi_tracks(src, beats=None)
    assert _UfuncCounter.elements <= 10 * n_tracks * per_track, "track numbers read once per track: quadratic"
    monkeypatch.undo()

    assert [name for name, _ in pieces] == [f"t{k}" for k in range(n_tracks)]
    assert len(pieces[3][1].notes) == 0 and report.dropped["pitch outside 21-108"] == per_track
    # reference: every track on its own, straight from symusic's ticks
    back = Score(str(src))
    for k in range(n_tracks):
        n = back.tracks[k].notes.numpy()
        on = np.floor(n["time"] * 4 / 480 + 0.5).astype(np.int64)
        off = np.floor((n["time"] + n["duration"]) * 4 / 480 + 0.5).astype(np.int64)
        rows = np.stack([n["pitch"], on, off, n["velocity"]], axis=1).astype(np.int64)
        want, _ = normalize_notes(rows[(rows[:, 0] >= 21) & (rows[:, 0] <= 108)])
        assert np.array_equal(pieces[k][1].notes, want), f"track {k}"
    for k in (0, 1, 2, 4999):  # and as read_midi_tracks reads one track
        alone, _ = read_midi_tracks(src, beats=None, tracks=[k])
        assert np.array_equal(alone[0][1].notes, pieces[k][1].notes)
    assert all(p.bar_starts is pieces[0][1].bar_starts for _, p in pieces)  # one grid, shared
    assert report.kept_notes == sum(len(p.notes) for _, p in pieces)


# =========================================================================== writing
def test_write_midi_is_atomic_and_leaves_no_temp_file(tmp_path, monkeypatch):
    piece = Piece.from_bars([(4, 4)], bpm=120, notes=[[60, 0, 4, 80]])
    target = tmp_path / "out.mid"
    write_midi(piece, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mid"]
    before = target.read_bytes()

    def fail(self, *args, **kwargs):
        raise OSError("disk full")

    # Score(tpq) is a factory; the scores it makes are symusic.core.ScoreTick
    monkeypatch.setattr(ScoreTick, "dump_midi", fail)
    other = Piece.from_bars([(3, 4)] * 2, bpm=90, notes=[[62, 0, 8, 100]])
    with pytest.raises(OSError, match="disk full"):
        write_midi(other, target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mid"]
    with pytest.raises(OSError):
        write_midi(other, tmp_path / "new.mid")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mid"]


def test_write_midi_contents(tmp_path):
    piece = Piece.from_bars([(4, 4), (3, 4), (3, 4), (6, 8)], bpm=[100, 100, 80, 80], notes=[[60, 0, 4, 80]])
    score = Score(str(write_midi(piece, tmp_path / "sub" / "c.mid")))  # creates the folder
    assert score.tpq == 480
    assert [(t.time, t.numerator, t.denominator) for t in score.time_signatures] == [
        (0, 4, 4), (1920, 3, 4), (1920 + 2 * 1440, 6, 8)]
    assert [(t.time, round(t.qpm, 3)) for t in score.tempos] == [(0, 100.0), (1920 + 1440, 80.0)]
    assert [(m.time, m.text) for m in score.markers] == [(1920 + 3 * 1440, "end")]
    assert [t.name for t in score.tracks] == ["piano"]


def test_write_tracks_must_share_bars(tmp_path):
    a = Piece.from_bars([(4, 4)], bpm=120)
    b = Piece.from_bars([(3, 4)], bpm=120)
    with pytest.raises(InputError, match="does not share"):
        write_midi([("a", a), ("b", b)], tmp_path / "x.mid")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)], ids=["022", "027", "002"])
def test_outputs_get_the_mode_of_a_new_file(tmp_path, umask, mode):
    # issue 10: outputs were 0600 whatever the umask (mkstemp's mode survived the rename)
    piece = Piece.from_bars([(4, 4)], bpm=120, notes=[[60, 0, 4, 80]])
    old = os.umask(umask)
    try:
        out = write_midi(piece, tmp_path / "song.mid")
        replaced = write_midi(piece, out)  # replacing a file: the new file's mode, too
        other = atomic_write(tmp_path / "x.txt", lambda tmp: Path(tmp).write_text("x"))
    finally:
        os.umask(old)
    for f in (out, replaced, other):
        assert f.stat().st_mode & 0o777 == mode, f"{f.name}: {oct(f.stat().st_mode & 0o777)}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["song.mid", "x.txt"]


def test_plot_is_written_with_the_mode_of_a_new_file(tmp_path):
    from fractalmidi.plot import plot_piece  # matplotlib: pinned in requirements.txt (the plot extra)

    piece = Piece.from_bars([(4, 4)] * 2, bpm=120, notes=[[60, 0, 4, 80]])
    old = os.umask(0o022)
    try:
        png = plot_piece(piece, tmp_path / "song.png")
    finally:
        os.umask(old)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["song.png"]


def test_read_score_reads_a_score_in_memory_as_read_midi_reads_its_file(pop909_song, tmp_path):
    """`read_score` (what a tokenizer's decoded Score goes through) gives the piece that
    `read_midi(path, beats=None)` gives for the same score written to a file."""
    from fractalmidi.midi_io import read_score

    path = pop909_song / f"{pop909_song.name}.mid"
    score = Score(str(path))
    from_file, _ = midi_io.read_midi(path, beats=None)
    in_memory, report = read_score(score, name="decoded")
    np.testing.assert_array_equal(in_memory.notes, from_file.notes)
    np.testing.assert_array_equal(in_memory.bar_starts, from_file.bar_starts)
    np.testing.assert_array_equal(in_memory.tempo_bpm, from_file.tempo_bpm)
    assert report.path == "decoded" and report.grid.startswith("ticks")
    with pytest.raises(InputError, match="decoded: not a symusic Score"):
        read_score("x.mid", name="decoded")
    with pytest.raises(InputError, match="empty: no notes"):
        read_score(Score(480), name="empty")
