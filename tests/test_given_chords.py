"""A user-given chord progression (`generate(chords=...)`, the command line's `--chords`): kept
exactly at the chord level, the free bars generated; refused by a model with no chord level."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from fractalmidi import controls
from fractalmidi.cli import main
from fractalmidi.configuration_fractalmidi import FractalMIDIConfig
from fractalmidi.midi_io import read_song_midi
from fractalmidi.modeling_fractalmidi import FractalMIDIModel

ROOT = Path(__file__).resolve().parents[1]
SONGS_TINY = ROOT / "hub_configs" / "songs_tiny.json"
PIANO_ONLY = ROOT / "hub_configs" / "small.json"  # a model without chord and melody levels
C_G_AM_F = [(0, 16, "C:maj"), (16, 32, "G:maj"), (32, 48, "A:min"), (48, 64, "F:maj")]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_given_chords_are_kept_exactly(songs_model):
    for seed in (1, 2):
        result = songs_model.generate(4, seed=seed, chords=controls.chords("C G Am F"))
        assert result.chord_spans(0) == C_G_AM_F


def test_two_chords_split_a_bar_and_the_first_takes_the_remainder(songs_model):
    result = songs_model.generate(4, seed=1, chords=controls.chords("C,G G7 Am,N,F F"))
    assert result.chord_spans(0) == [(0, 8, "C:maj"), (8, 16, "G:maj"), (16, 32, "G:7"), (32, 40, "A:min"),
                                     (44, 64, "F:maj")]
    names = result.chord_names(0)
    assert names[10] == "N"  # the bar's second beat of three: 2, 1, 1 beats
    assert names[8:12] == ["A:min", "A:min", "N", "F:maj"]
    # 3/4: three beats, two chords -> 2 + 1
    result = songs_model.generate(2, seed=1, time_signatures=(3, 4), chords=controls.chords("C,G Am"))
    assert result.chord_names(0) == ["C:maj", "C:maj", "G:maj", "A:min", "A:min", "A:min"]


def test_a_free_bar_is_generated(songs_model):
    bars = controls.chords("C G Am F")
    bars[1] = None
    result = songs_model.generate(4, seed=1, chords=bars)
    names = result.chord_names(0)
    assert names[:4] == ["C:maj"] * 4 and names[8:] == ["A:min"] * 4 + ["F:maj"] * 4
    assert all(n is not None for n in names[4:8])  # generated, not left unknown
    free = songs_model.generate(4, seed=1).chord_names(0)
    assert all(n is not None for n in free)


def test_the_same_seed_gives_the_same_piece_with_chords(songs_model):
    a = songs_model.generate(2, seed=3, chords=controls.chords("C G"))
    b = songs_model.generate(2, seed=3, chords=controls.chords("C G"))
    assert torch.equal(a.states, b.states) and torch.equal(a.chords, b.chords)


@pytest.mark.parametrize("chords, message", [
    ("C G Am", "chords: 3 bars of chords for a piece of 4 bars"),
    ("C G Am F G", "chords: 5 bars of chords for a piece of 4 bars"),
    ("C C,G,Am,F,Dm Am F", "chords, bar 2: 5 chords for a bar of 4 beats"),
])
def test_bad_chords_are_refused_with_the_bar_named(songs_model, chords, message):
    with pytest.raises(ValueError) as e:
        songs_model.generate(4, seed=1, chords=controls.chords(chords))
    assert str(e.value).startswith(message)


def test_bad_chord_entries_are_refused_with_the_bar_named(songs_model):
    with pytest.raises(ValueError, match="chords, bar 3: no chord"):
        songs_model.generate(4, seed=1, chords=[[(0, "maj", 0)], None, [], None])
    with pytest.raises(ValueError, match="chords, bar 2: .*quality"):
        songs_model.generate(2, seed=1, chords=[[(0, "maj", 0)], [(0, "major", 0)]])


def test_a_piano_only_model_refuses_chords():
    plain = FractalMIDIModel(FractalMIDIConfig.from_json_file(PIANO_ONLY.with_name("tiny.json"))).eval()
    with pytest.raises(ValueError, match="chords= needs a model with a chord level"):
        plain.generate(num_bars=4, seed=0, chords=controls.chords("C G Am F"))


def test_cli_writes_the_given_chords(capsys, tmp_path, songs_model_dir):
    out = tmp_path / "x.mid"
    code, _, err = run(capsys, "generate", "--model", songs_model_dir, "--chords", "C G Am F", "--out", out, "--quiet")
    assert code == 0, err
    assert read_song_midi(out).chords == C_G_AM_F
    code, _, err = run(capsys, "generate", "--model", songs_model_dir, "--bars", 4, "--chords", "C G Am F",
                       "--out", tmp_path / "y.mid", "--quiet")
    assert code == 0, err
    assert read_song_midi(tmp_path / "y.mid").chords == C_G_AM_F


def test_cli_chords_and_bars_must_agree(capsys, tmp_path, songs_model_dir):
    code, _, err = run(capsys, "generate", "--model", songs_model_dir, "--bars", 3, "--chords", "C G Am F",
                       "--out", tmp_path / "x.mid", "--quiet")
    assert code == 2
    assert err.strip() == ("fractalmidi: error: bars disagree: the chords have 4, bars is 3; they must agree "
                           "(without bars, the number of bars follows from the form or the chords)")
    assert not (tmp_path / "x.mid").exists()


def test_cli_chords_are_refused_before_the_weights_load(capsys, tmp_path):
    """A config-only folder of a piano-only model (hub_configs/small.json): the refusal came
    from config.json alone."""
    config_only = tmp_path / "config_only"
    config_only.mkdir()
    shutil.copy(PIANO_ONLY, config_only / "config.json")
    for argv in (["generate"], ["generate", "--bars", 2],
                 ["continue", "--input", ROOT / "tests/data/pop909/001/001.mid", "--bars", 1]):
        code, _, err = run(capsys, *argv, "--model", config_only, "--chords", "C G", "--out", tmp_path / "x.mid", "--quiet")
        assert code == 2
        assert err.strip() == (f"fractalmidi: error: --chords: the model at {config_only} has no chord level "
                               f"(see hub_configs/songs_tiny.json)")
    assert not list(tmp_path.glob("x.*"))


def test_cli_generate_needs_bars_or_chords(capsys, tmp_path):
    code, _, err = run(capsys, "generate", "--out", tmp_path / "x.mid", "--quiet")
    assert code == 2
    assert err.strip() == "fractalmidi: error: give --bars N (or --form or --chords, which give the number of bars)"


def test_chords_are_in_the_help(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    assert "--chords" in capsys.readouterr().out


def test_given_chords_are_heard_through_the_chord_plan(songs_model):
    """chord_gain leans the note level's onsets to the given chords' tones: on an untrained
    model, their share of the new onsets rises from chance to most of them."""
    import numpy as np

    chords = controls.chords("C Am F G")
    tones = [{0, 4, 7}, {9, 0, 4}, {5, 9, 0}, {7, 11, 2}]

    def share(gain):
        hits = total = 0
        for seed in range(3):
            out = songs_model.generate(4, seed=seed, chords=chords, chord_gain=gain)
            piano, _ = out.to_song()
            for p, start, _, _ in piano.notes.tolist():
                total += 1
                hits += (p % 12) in tones[start // 16]
        return hits / total

    off, on = share(0.0), share(4.0)
    assert on > off + 0.2 and on > 0.6, (off, on)
    with pytest.raises(ValueError, match="chord_gain"):
        songs_model.generate(4, chords=chords, chord_gain=9.0)


def test_a_slash_chords_bass_is_the_only_pitch_class_of_its_bass_register(songs_model):
    """F/A, C/E, G/B: in the bars of a slash chord, the accompaniment starts no note below G3
    (MIDI 55, `BASS_REGISTER_TOP`) other than the bass asked, and plays that bass there more
    often than the same chords without it; a bass outside 0-11 is refused."""
    import numpy as np

    from fractalmidi.modeling_fractalmidi import BASS_REGISTER_TOP

    def low_notes(text):
        chords = controls.chords(text)
        wrong = bass = 0
        for seed in range(3):
            piano, _ = songs_model.generate(3, seed=seed, chords=chords, chord_gain=4.0).to_song()
            for p, start, _, _ in piano.notes.tolist():
                asked = chords[start // 16][0][2]
                if p < BASS_REGISTER_TOP:
                    wrong += p % 12 != asked
                    bass += p % 12 == asked
        return wrong, bass

    slash_wrong, slash_bass = low_notes("F/A C/E G/B")
    plain_wrong, plain_bass = low_notes("F C G")  # the bass here is the root: nothing is banned
    assert slash_wrong == 0 and plain_wrong > 0
    assert slash_bass > 0
    with pytest.raises(ValueError, match="the bass must be a pitch class 0-11"):
        songs_model.generate(1, chords=[[(5, "maj", 12)]])


def test_melody_gain_keeps_the_accompaniment_under_the_melody(songs_model):
    """melody_gain leans accompaniment onsets away from pitches above the laid melody (the
    caller's here; the melody level's line goes through the same `lay_melody`): on an untrained
    model, the share of new onsets above the melody sounding at their step falls to a few."""
    import numpy as np

    melody = np.array([[60 + 2 * (k % 5), 4 * k, 4 * k + 4, 90] for k in range(16)])  # 4 bars of quarters

    def above(gain):
        hits = total = 0
        for seed in range(3):
            piano, _ = songs_model.generate(4, seed=seed, melody=melody, melody_gain=gain).to_song()
            top = np.full(64, -1)
            for p, a, b, _ in melody.tolist():
                top[a:b] = p
            for p, start, _, _ in piano.notes.tolist():
                total += 1
                hits += p > top[start]
        return hits / total

    off, on = above(0.0), above(6.0)
    assert off > 0.3 and on < off / 3, (off, on)
    with pytest.raises(ValueError, match="melody_gain"):
        songs_model.generate(4, melody=melody, melody_gain=9.0)


def test_slash_bass_script_counts_bars(songs_model_dir, capsys):
    """scripts/slash_bass.py (README's figure) runs on any song model and counts every bar that
    has a note; a seed count out of range stops it."""
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import slash_bass
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    hits, bars = slash_bass.main(["--model", str(songs_model_dir), "--seeds", "1"])
    assert 0 <= hits <= bars <= 12 and bars > 0
    assert "| F/A |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        slash_bass.main(["--model", str(songs_model_dir), "--seeds", "0"])
