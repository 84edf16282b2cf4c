"""POP909 structure annotations (fractalmidi.structure): parsers, reading, alignment.

- parse_form / parse_chord / the file readers: good input, and bad input raising InputError
  naming the file, the line and the bad part;
- read_annotations on the five songs copied to tests/data/pop909-structure;
- align_song on those songs: the measured shifts and match shares (deterministic: exact);
- a synthetic piece whose MELODY track is the annotated melody shifted by k beats is found at
  shift k with match 1.0; a song that does not align well keeps its notes, levels masked;
- scripts/align_structure.py writes its report.
"""

import json
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from fractalmidi.errors import InputError
from fractalmidi.structure import (
    GOOD_MATCH,
    MAX_FORM_BARS,
    QUALITIES,
    Phrase,
    align,
    align_song,
    bar_labels,
    chord_coverage,
    find_shift,
    form_string,
    parse_chord,
    parse_form,
    read_annotations,
    read_chords,
    read_key,
    read_melody,
)

ROOT = Path(__file__).resolve().parent.parent
MIDI = ROOT / "tests" / "data" / "pop909"
ANN = ROOT / "tests" / "data" / "pop909-structure"
SONGS = ["001", "002", "003", "267", "580"]

# measured (the computation is deterministic): shift in beats, matched onsets / annotated
# onsets, annotated bars (form), chord beats, keys
EXPECTED = {
    "001": (4, Fraction(264, 264), 71, 284, ["Gb:maj"]),
    "002": (4, Fraction(308, 310), 58, 233, ["B:maj"]),
    "003": (2, Fraction(422, 422), 76, 307, ["Bb:maj"]),
    "267": (21, Fraction(273, 273), 37, 148, ["Gb:min", "B:maj"]),
    "580": (0, Fraction(156, 259), 39, 158, ["F:min"]),
}


# ------------------------------------------------------------------------- form
def test_parse_form_and_bar_labels():
    phrases = parse_form("i4A4B8A4b4o3")
    assert phrases == [Phrase("i", 4), Phrase("A", 4), Phrase("B", 8), Phrase("A", 4), Phrase("b", 4), Phrase("o", 3)]
    assert [p.melodic for p in phrases] == [False, True, True, True, False, False]
    assert form_string(phrases) == "i4A4B8A4b4o3"
    lab = bar_labels(phrases)
    assert len(lab) == 27
    assert lab.letter[:6] == ["i"] * 4 + ["A"] * 2
    assert lab.phrase[8].item() == 2 and lab.position[8].item() == 0 and lab.length[8].item() == 8
    assert lab.position[15].item() == 7
    assert lab.melodic.sum() == 16
    assert parse_form(" A12 ") == [Phrase("A", 12)]


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty form string"),
        ("A4B", "bad part 'B'"),
        ("4A", "bad part '4A'"),
        ("A4-B4", "bad part '-B4'"),
        ("A0", "phrase 'A0' at character 1 has 0 bars"),
        ("A4B200", "phrase 'B200' at character 3 has 200 bars"),
        ("A100" * 11, f"more than {MAX_FORM_BARS} bars"),
    ],
)
def test_parse_form_rejects_bad_strings(text, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        parse_form(text)


# ------------------------------------------------------------------------- chords
def test_parse_chord_vocabulary():
    c = parse_chord("B:maj")
    assert (c.root, c.quality, c.bass, c.exact) == (11, "maj", 11, True)
    c = parse_chord("A:min7/b7")
    assert (c.root, c.quality, c.bass, c.exact) == (9, "min7", 7, True)
    c = parse_chord("Db:min/b3")
    assert (c.root, c.quality, c.bass) == (1, "min", 4)
    c = parse_chord("C:maj(9)")  # outside the vocabulary: reduced, marked not exact
    assert (c.root, c.quality, c.exact) == (0, "maj", False)
    c = parse_chord("F#:sus4(b7")  # cut off in the files
    assert (c.root, c.quality, c.exact) == (6, "sus4", False)
    assert parse_chord("G:sus4(b7)\x01").quality == "sus4(b7)"  # stray control character
    n = parse_chord("N")
    assert (n.root, n.quality, n.bass) == (-1, "N", -1)
    assert all(parse_chord(f"C:{q}").exact for q in QUALITIES)


@pytest.mark.parametrize(
    "name, message",
    [("Cmaj", "bad chord 'Cmaj'"), ("H:maj", "bad root 'H'"), ("C:blah", "unknown chord quality 'blah'"),
     ("C:maj/x", "unknown bass degree 'x'")],
)
def test_parse_chord_rejects_bad_symbols(name, message):
    with pytest.raises(InputError, match=message):
        parse_chord(name)


# ------------------------------------------------------------------------- files
def test_file_errors_name_file_and_line(tmp_path):
    f = tmp_path / "finalized_chord.txt"
    f.write_text("B:maj [3, 6, 11] 11 2\nC:maj [0, 4, 7] 0\n")
    with pytest.raises(InputError, match=r"finalized_chord.txt, line 2: expected ROOT and BEATS"):
        read_chords(f)
    f.write_text("B:maj [3, 6, 11] 11 2\n\nC:wat [0, 4, 7] 0 2\n")
    with pytest.raises(InputError, match=r"line 3: unknown chord quality 'wat'"):
        read_chords(f)
    f.write_text("B:maj (3, 6) 11 2\n")
    with pytest.raises(InputError, match=r"line 1: expected 'NAME \[pitch classes\] ROOT BEATS'"):
        read_chords(f)
    f.write_text("B:maj [3, 16] 11 2\n")
    with pytest.raises(InputError, match=r"line 1: pitch classes must be 0-11"):
        read_chords(f)
    f.write_text("N []  7\nC:maj [0, 4, 7] 0 4\n")  # no-chord lines carry no root
    names, chords, beats, _ = read_chords(f)
    assert names == ["N", "C:maj"] and beats.tolist() == [7, 4] and chords[0].quality == "N"

    m = tmp_path / "melody.txt"
    m.write_text("0 4\n60 2\n62 x\n")
    with pytest.raises(InputError, match=r"melody.txt, line 3: expected whole numbers"):
        read_melody(m)
    m.write_text("60 2\n200 2\n")
    with pytest.raises(InputError, match=r"line 2: pitch 200 outside 0-127"):
        read_melody(m)
    m.write_text("60 0\n")
    with pytest.raises(InputError, match=r"line 1: duration 0"):
        read_melody(m)
    m.write_text("0 4\n60 2\n0 2\n62 4\n")
    assert read_melody(m).tolist() == [[60, 4, 6, 100], [62, 8, 12, 100]]

    k = tmp_path / "analyzed_key.txt"
    k.write_text("G:majE:min\nBb:maj\n")  # two keys run together, as in a few files
    assert read_key(k) == ["G:maj", "E:min", "Bb:maj"]
    k.write_text("G major\n")
    with pytest.raises(InputError, match=r"analyzed_key.txt, line 1: bad key 'G major'"):
        read_key(k)

    with pytest.raises(InputError, match="annotation folder not found"):
        read_annotations(tmp_path / "nope")
    with pytest.raises(InputError, match=r"human_label1.txt: annotation file not found"):
        read_annotations(tmp_path)
    (tmp_path / "human_label1.txt").write_text("i4A4Bx\n")
    with pytest.raises(InputError, match=r"human_label1.txt, line 1: bad part 'Bx'"):
        read_annotations(tmp_path)


@pytest.mark.parametrize("song", SONGS)
def test_read_annotations_on_the_test_songs(song):
    ann = read_annotations(ANN / song)
    _, _, bars, chord_beats, keys = EXPECTED[song]
    for k in (1, 2):
        assert ann.forms[k - 1] == (ANN / song / f"human_label{k}.txt").read_text().strip()
    assert sum(p.bars for p in ann.phrases[0]) == bars
    assert ann.chord_total_beats == chord_beats
    assert ann.keys == keys and ann.key == keys[0]
    lines = [ln.split() for ln in (ANN / song / "melody.txt").read_text().splitlines() if ln.strip()]
    assert len(ann.melody) == sum(1 for p, _ in lines if p != "0")
    assert ann.melody[-1, 2] <= sum(int(d) for _, d in lines)
    assert np.all(ann.melody[1:, 1] >= ann.melody[:-1, 2])  # monophonic, in order


def test_chord_coverage_on_the_test_songs():
    cov = chord_coverage([read_annotations(ANN / s) for s in SONGS])
    assert cov["chord_beats"] == 1130
    assert cov["coverage"] > 0.99
    assert set(cov["outside"]) == {"maj9", "min9", "maj(9)", "min(9)"}


# ------------------------------------------------------------------------- alignment
@pytest.mark.parametrize("song", SONGS)
def test_align_test_songs(song):
    shift, match, bars, chord_beats, _ = EXPECTED[song]
    a = align_song(MIDI / song / f"{song}.mid", ANN / song)
    assert a.shift_beats == shift
    assert a.match == pytest.approx(float(match), abs=1e-12)
    assert a.on_bar_line
    assert a.aligned_well == (match >= GOOD_MATCH)
    T = a.num_steps
    assert len(a.step_form_bar) == T and len(a.beat_root) == T // 4 and len(a.bar_mask) == len(a.bar_starts) - 1
    assert len(a.midi_melody) > 0 and "PIANO" in a.notes
    if a.aligned_well:
        assert a.beat_chord_mask.sum() == chord_beats  # every annotated beat lands inside the piece
        assert set(np.unique(a.step_form_bar[a.step_form_bar >= 0])) == set(range(bars))
        assert (a.beat_quality[a.beat_chord_mask] >= -1).all()
    else:  # song 580: notes kept, the structure levels masked, never silently dropped
        assert not a.bar_mask.any() and not a.beat_chord_mask.any() and (a.step_form_bar == -1).all()
        assert (a.beat_root == -1).all() and a.bar_letter == [""] * len(a.bar_mask)
        assert len(a.melody) > 0


def test_song_001_labels_follow_its_form():
    a = align_song(MIDI / "001" / "001.mid", ANN / "001")
    form = parse_form(a.form)
    assert a.bar_mask.sum() == sum(p.bars for p in form) == 71
    assert (a.bar_on_grid[a.bar_mask]).all()  # the shift is on a bar line and the bars are 4/4
    # run-length of the labelled bars' phrases gives the form string back
    letters = [a.bar_letter[i] for i in np.nonzero(a.bar_mask)[0]]
    phrases = a.bar_phrase[a.bar_mask]
    runs = []
    for i, (ltr, ph) in enumerate(zip(letters, phrases)):
        if i == 0 or ph != phrases[i - 1]:
            runs.append([ltr, 0])
        runs[-1][1] += 1
    assert "".join(f"{ltr}{n}" for ltr, n in runs) == a.form
    first = int(np.nonzero(a.bar_mask)[0][0])
    assert a.bar_starts[first] == 4 * a.shift_beats
    assert a.bar_position[first] == 0 and a.bar_phrase_length[first] == 4 and not a.bar_melodic[first]
    # the first chord B:maj, 2 beats, from the shift on
    assert a.beat_root[a.shift_beats: a.shift_beats + 2].tolist() == [11, 11]
    assert a.beat_quality[a.shift_beats] == QUALITIES.index("maj")
    assert not a.beat_chord_mask[: a.shift_beats].any()


@pytest.mark.parametrize("k", [0, 3, 8, 13])
def test_synthetic_shift_is_found(k):
    ann = read_annotations(ANN / "002")
    melody = ann.melody.copy()
    melody[:, 1:3] += 4 * k
    T = int(np.ceil((melody[:, 2].max() + 1) / 16) * 16)
    bar_starts = np.arange(0, T + 1, 16)
    decoy = np.array([[40, 0, 4, 80], [41, 16, 20, 80]])  # a piano part that shares nothing
    a = align(ann, {"MELODY": melody, "PIANO": decoy}, bar_starts, bar_starts[:-1])
    assert a.shift_beats == k and a.match == 1.0 and a.aligned_well
    assert a.on_bar_line == (k % 4 == 0)
    assert a.bar_on_grid.all() == (k % 4 == 0)
    np.testing.assert_array_equal(a.melody, melody)
    assert find_shift(ann.melody, melody) == (k, 1.0)


def test_find_shift_edge_cases():
    assert find_shift(np.zeros((0, 4)), np.array([[60, 0, 4, 100]])) == (0, 0.0)
    ann = np.array([[60, 8, 12, 100], [62, 12, 16, 100]])
    midi = np.array([[60, 0, 4, 100], [62, 4, 8, 100]])
    assert find_shift(ann, midi) == (-2, 1.0)  # the MIDI starts before the annotation
    assert find_shift(ann, np.array([[70, 0, 4, 100]])) == (0, 0.0)  # nothing matches: shift 0


# ------------------------------------------------------------------------- script
def test_align_structure_script(tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import align_structure
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    out = tmp_path / "r" / "report.json"
    assert align_structure.main([str(MIDI), str(ANN), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| 5 | 4 (80.0%) |" in text and "580 (0.60, shift 0)" in text
    rep = json.loads(out.read_text())
    assert rep["summary"]["songs"] == 5 and rep["summary"]["aligned_well"] == 4
    assert rep["not_aligned_well"] == ["580"] and rep["unreadable"] == []
    assert [r["shift_beats"] for r in rep["songs"]] == [EXPECTED[s][0] for s in SONGS]
    assert not list(out.parent.glob("*.tmp*")) and len(list(out.parent.iterdir())) == 1
