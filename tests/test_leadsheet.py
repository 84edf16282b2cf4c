"""Songs out: MIDI with Melody and Piano tracks, chord markers and key signature
(midi_io.write_song_midi / read_song_midi), and MusicXML lead sheets through music21
(fractalmidi.leadsheet), on POP909 song 001 with its annotated melody and chords."""

from pathlib import Path

import numpy as np
import pytest
from symusic import Score

from fractalmidi.errors import InputError
from fractalmidi.leadsheet import (
    KIND_QUALITY,
    QUALITY_FIGURES,
    QUALITY_INTERVALS,
    LeadSheet,
    chord_figure,
    chord_name,
    chord_spans,
    key_name,
    key_signature,
    lead_sheet_from_alignment,
    write_lead_sheet_musicxml,
    write_musicxml,
)
from fractalmidi.midi_io import read_midi, read_midi_tracks, read_song_midi, write_midi, write_song_midi
from fractalmidi.piece import Piece, normalize_notes
from fractalmidi.structure import QUALITIES, align_song, parse_chord

DATA = Path(__file__).resolve().parent / "data"
SONG_MIDI = DATA / "pop909" / "001" / "001.mid"
SONG_ANN = DATA / "pop909-structure" / "001"
BARS = 16  # the MusicXML excerpt


@pytest.fixture(scope="module")
def song():
    """Song 001: its PIANO track (read with its beat file) and its annotated lead sheet."""
    al = align_song(SONG_MIDI, SONG_ANN)
    assert al.aligned_well
    tracks, _ = read_midi_tracks(SONG_MIDI)
    piano = dict(tracks)["PIANO"]
    return piano, lead_sheet_from_alignment(al, piano)


def m21():
    import music21  # pinned in requirements.txt (the leadsheet extra)

    return music21


# =========================================================================== MIDI
def test_song_midi_round_trip(song, tmp_path):
    piano, sheet = song
    assert sheet.key == "Gb:maj" and len(sheet.melody) > 200 and len(sheet.chords) > 50
    path = write_song_midi(tmp_path / "song.mid", piano, sheet.melody, sheet.chords, sheet.key)

    back = read_song_midi(path)
    assert [n for n, _ in back.tracks] == ["Melody", "Piano"]
    np.testing.assert_array_equal(back.track("Melody").notes, sheet.melody)
    np.testing.assert_array_equal(back.track("Piano").notes, piano.notes)
    for _, p in back.tracks:
        np.testing.assert_array_equal(p.bar_starts, piano.bar_starts)
        np.testing.assert_array_equal(p.time_signatures, piano.time_signatures)
    assert back.chords == [c for c in sheet.chords if c[2] != "N"]
    assert back.key == "Gb:maj" and back.keys == [(0, "Gb:maj")]

    # the raw file: a marker with each chord's name at its onset, the key signature
    score = Score(str(path))
    tps = score.tpq // piano.steps_per_beat
    markers = {(m.time // tps, m.text) for m in score.markers}
    for s, _, name in sheet.chords:
        assert (s, name) in markers
    assert all(m.time % tps == 0 for m in score.markers)
    assert [(k.time, k.key, k.tonality) for k in score.key_signatures] == [(0, -6, 0)]
    assert [t.name for t in score.tracks] == ["Melody", "Piano"]

    # read_midi (all tracks merged, markers ignored) gives the union of the notes
    merged, report = read_midi(path)
    expected, _ = normalize_notes(np.concatenate([sheet.melody, piano.notes]))
    np.testing.assert_array_equal(merged.notes, expected)
    assert report.grid.startswith("ticks")


def test_song_midi_merge_and_chords_per_beat(song, tmp_path):
    piano, sheet = song
    per_beat = [None] * (int(piano.bar_starts[-1]) // 4)
    per_beat[0:4] = ["C:maj"] * 4
    per_beat[4] = "A:min7"
    per_beat[6:8] = ["F:maj/3", "N"]
    path = write_song_midi(tmp_path / "merged.mid", piano, sheet.melody, per_beat, "Eb:min", merge=True)
    back = read_song_midi(path)
    assert [n for n, _ in back.tracks] == ["Piano"]
    expected, _ = normalize_notes(np.concatenate([sheet.melody, piano.notes]))
    np.testing.assert_array_equal(back.tracks[0][1].notes, expected)
    assert back.chords == [(0, 16, "C:maj"), (16, 20, "A:min7"), (24, 28, "F:maj/3")]
    assert back.key == "Eb:min"
    texts = [(m.time, m.text) for m in Score(str(path)).markers]
    tps = Score(str(path)).tpq // 4
    assert (20 * tps, "N") in texts and (28 * tps, "N") in texts  # where a chord stops


def test_write_midi_unchanged(song, tmp_path):
    piano, _ = song
    path = write_midi(piano, tmp_path / "plain.mid")
    back, _ = read_midi(path)
    np.testing.assert_array_equal(back.notes, piano.notes)
    score = Score(str(path))
    assert [t.name for t in score.tracks] == ["piano"] and len(score.key_signatures) == 0
    assert [m.text for m in score.markers] == ["end"]


# =========================================================================== keys and chord names
def test_key_signatures():
    assert key_signature("G:maj") == (1, 0)
    assert key_signature("Eb:min") == (-6, 1)
    assert key_signature("Gb:maj") == (-6, 0)
    assert key_signature("A:min") == (0, 1)
    assert key_signature("D#:maj") == (-3, 0)  # respelled as Eb major
    for sharps in range(-7, 8):
        for tonality in (0, 1):
            assert key_signature(key_name(sharps, tonality)) == (sharps, tonality)
    assert key_name(-6, 0) == "Gb:maj" and key_name(1, 1) == "E:min" and key_name(3, 0) == "A:maj"


def test_chord_figures_known_names():
    assert chord_figure("C:maj") == "C"
    assert chord_figure("A:min7") == "Am7"
    assert chord_figure("F:maj/3") == "F/A"
    assert chord_figure("N") is None
    assert chord_figure("Eb:min") == "Ebm"
    assert chord_figure("Eb:min", flat="-") == "E-m"
    assert chord_figure("B:hdim7") == "Bø7"
    assert chord_figure("G:sus4(b7)") == "G7sus4"
    assert chord_figure("C:maj9") == "Cmaj7"  # reduced as parse_chord reduces it
    assert chord_figure("F#:maj", key="Gb:maj") == "Gb" and chord_figure("Gb:maj", key="E:maj") == "F#"
    assert chord_name(9, "min7") == "A:min7" and chord_name(5, "maj", 9) == "F:maj/3" and chord_name(-1, "N") == "N"
    assert set(QUALITY_FIGURES) == set(QUALITIES) == set(QUALITY_INTERVALS)


@pytest.mark.parametrize("quality", QUALITIES)
def test_chord_figure_every_quality(quality):
    """Every quality's figure parses in music21 to the intended kind and pitch classes, and
    chord_name / parse_chord agree with it, with and without a bass."""
    music21 = m21()
    from fractalmidi.leadsheet import chord_symbol

    for root in (0, 3, 9):
        name = chord_name(root, quality)
        c = parse_chord(name)
        assert (c.root, c.quality, c.exact) == (root, quality, True)
        fig = chord_figure(name, flat="-")
        sym = music21.harmony.ChordSymbol(fig)
        assert sym.chordKind == QUALITY_FIGURES[quality][1], fig
        assert {p.pitchClass for p in sym.pitches} == {(root + i) % 12 for i in QUALITY_INTERVALS[quality]}, fig
        direct = chord_symbol(name)
        assert direct.chordKind == QUALITY_FIGURES[quality][1]
        assert KIND_QUALITY[direct.chordKind] == quality
        assert {p.pitchClass for p in direct.pitches} == {(root + i) % 12 for i in QUALITY_INTERVALS[quality]}
    # with the third / fifth in the bass
    bass_int = QUALITY_INTERVALS[quality][1]
    name = chord_name(2, quality, (2 + bass_int) % 12)
    c = parse_chord(name)
    assert (c.root, c.quality, c.bass) == (2, quality, (2 + bass_int) % 12)
    sym = music21.harmony.ChordSymbol(chord_figure(name, flat="-"))
    assert sym.bass().pitchClass == (2 + bass_int) % 12 and sym.root().pitchClass == 2


def test_chord_spans():
    assert chord_spans(["C:maj", "C:maj", None, "G:7", "G:7", "G:7"], 4) == [(0, 8, "C:maj"), (12, 24, "G:7")]
    assert chord_spans([(8, 16, "G:7"), (0, 8, "C:maj")]) == [(0, 8, "C:maj"), (8, 16, "G:7")]
    assert chord_spans(None) == []


# =========================================================================== MusicXML
def _expected_excerpt(sheet, bars):
    g = sheet.grid
    s1 = int(g.bar_starts[bars])
    spb = g.steps_per_beat
    mel = sheet.melody[sheet.melody[:, 1] < s1]
    notes = [(int(p), s / spb, (min(e, s1) - s) / spb) for p, s, e, _ in mel]
    chords = []
    for s, e, name in sheet.chords:
        if s < s1 and name != "N":
            c = parse_chord(name)
            chords.append((s / spb, c.root, c.quality, c.bass))
    return notes, chords


def _read_back(path):
    music21 = m21()
    score = music21.converter.parse(str(path))
    flat = score.stripTies().flatten()
    notes = [(n.pitch.midi, float(n.offset), float(n.quarterLength)) for n in flat.getElementsByClass("Note")]
    chords = [
        (float(h.offset), h.root().pitchClass, KIND_QUALITY[h.chordKind], h.bass().pitchClass)
        for h in flat.getElementsByClass("ChordSymbol")
    ]
    return score, notes, chords


def test_musicxml_round_trip_song(song, tmp_path):
    music21 = m21()
    _, sheet = song
    path = write_lead_sheet_musicxml(tmp_path / "001.musicxml", sheet, (0, BARS), title="POP909 001")
    score, notes, chords = _read_back(path)
    exp_notes, exp_chords = _expected_excerpt(sheet, BARS)
    assert len(exp_notes) > 20 and len(exp_chords) > 10
    assert notes == exp_notes
    assert chords == exp_chords
    part = score.parts[0]
    measures = part.getElementsByClass("Measure")
    assert len(measures) == BARS
    assert all(m.barDuration.quarterLength == 4 for m in measures)
    keys = list(score.flatten().getElementsByClass(music21.key.KeySignature))
    assert keys and keys[0].sharps == -6
    sigs = list(score.flatten().getElementsByClass(music21.meter.TimeSignature))
    assert [s.ratioString for s in sigs] == ["4/4"]
    assert score.metadata.bestTitle == "POP909 001"
    # rests fill every bar where there is no melody: each bar's notes and rests add up
    for m in measures:
        assert sum(float(x.quarterLength) for x in m.notesAndRests) == pytest.approx(4.0)


def test_musicxml_ties_and_metres(tmp_path):
    music21 = m21()
    sigs = [(4, 4), (3, 4), (6, 8), (4, 4)]
    grid = Piece.from_bars(sigs, 100.0)
    # bars: 0-16, 16-28, 28-40, 40-56
    melody = [(60, 2, 5, 90), (62, 12, 20, 90), (64, 24, 44, 90), (65, 46, 50, 90)]
    chords = [(0, 16, "C:maj"), (16, 30, "A:min7"), (30, 40, "N"), (40, 56, "F:maj/3")]
    path = write_musicxml(tmp_path / "t.musicxml", melody, chords, "A:min", sigs, grid.bar_starts, 4)
    score, notes, got_chords = _read_back(path)
    assert notes == [(60, 0.5, 0.75), (62, 3.0, 2.0), (64, 6.0, 5.0), (65, 11.5, 1.0)]
    assert got_chords == [(0.0, 0, "maj", 0), (4.0, 9, "min7", 9), (10.0, 5, "maj", 9)]
    raw = list(music21.converter.parse(str(path)).flatten().getElementsByClass("Note"))
    ties = [n.tie.type if n.tie else None for n in raw]
    assert "start" in ties and "stop" in ties and "continue" in ties  # 64 runs through bar 3
    sig_strings = [s.ratioString for s in score.flatten().getElementsByClass(music21.meter.TimeSignature)]
    assert sig_strings == ["4/4", "3/4", "6/8", "4/4"]
    assert score.flatten().getElementsByClass(music21.key.KeySignature)[0].sharps == 0


# =========================================================================== bad input
def test_bad_chord_and_melody_raise(song, tmp_path):
    piano, sheet = song
    with pytest.raises(InputError, match="C:major"):
        write_song_midi(tmp_path / "x.mid", piano, sheet.melody, [(0, 16, "C:major")])
    with pytest.raises(InputError, match="H:maj"):
        chord_spans(["C:maj", "H:maj"])
    poly = np.array([[60, 0, 8, 90], [64, 4, 12, 90]])
    with pytest.raises(InputError, match="not monophonic.*64 at step 4"):
        write_song_midi(tmp_path / "x.mid", piano, poly)
    with pytest.raises(InputError, match="not monophonic"):
        LeadSheet(piano, np.array([[60, 0, 8, 90], [67, 0, 8, 90]]))
    with pytest.raises(InputError, match="Q:maj"):
        write_song_midi(tmp_path / "x.mid", piano, sheet.melody, key="Q:maj")
    with pytest.raises(InputError, match="overlaps"):
        chord_spans([(0, 8, "C:maj"), (4, 12, "G:maj")])
    assert not (tmp_path / "x.mid").exists()
    grid = Piece.from_bars([(4, 4)] * 2)
    m21()
    with pytest.raises(InputError, match="C:mjr"):
        write_musicxml(tmp_path / "x.musicxml", [], [(0, 4, "C:mjr")], None, [(4, 4)] * 2, grid.bar_starts, 4)
    with pytest.raises(InputError, match="not monophonic"):
        write_musicxml(tmp_path / "x.musicxml", poly, [], None, [(4, 4)] * 2, grid.bar_starts, 4)
    assert not (tmp_path / "x.musicxml").exists()
