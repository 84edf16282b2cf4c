"""Generation results as MusicXML lead sheets: `FractalMIDIGeneration.to_musicxml` and the
command line's `--musicxml` (refused, before the weights load, for a model with no melody level)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from fractalmidi.cli import main
from fractalmidi.configuration_fractalmidi import FractalMIDIConfig
from fractalmidi.leadsheet import chord_symbol
from fractalmidi.modeling_fractalmidi import FractalMIDIModel

import music21  # pinned in requirements.txt (the leadsheet extra)

ROOT = Path(__file__).resolve().parents[1]
SONGS_TINY = ROOT / "hub_configs" / "songs_tiny.json"
PIANO_ONLY = ROOT / "hub_configs" / "small.json"  # a model without chord and melody levels
NO_MELODY = "this model has no melody level: a lead sheet needs one (see hub_configs/songs_tiny.json)"


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def parsed_notes_and_chords(path):
    score = music21.converter.parse(str(path))
    part = score.parts[0]
    notes = []  # (midi pitch, tie type) of each notated note, ties merged below
    for n in part.recurse().notes:
        if isinstance(n, music21.harmony.ChordSymbol):
            continue
        notes.append(n)
    merged = [n for n in notes if n.tie is None or n.tie.type == "start"]
    symbols = list(part.recurse().getElementsByClass(music21.harmony.ChordSymbol))
    return merged, symbols


def test_to_musicxml_writes_the_melody_and_chords(tmp_path, songs_model):
    result = songs_model.generate(4, seed=1)
    assert result.melody is not None
    path = result.to_musicxml(tmp_path / "lead.musicxml", title="Tiny")
    assert Path(path).is_file()
    melody, spans = result.melody_notes(0), result.chord_spans(0)
    notes, symbols = parsed_notes_and_chords(path)
    assert len(notes) == len(melody)
    assert [n.pitch.midi for n in notes] == melody[:, 0].tolist()
    expected = [s for s in (chord_symbol(name) for _, _, name in spans) if s is not None]
    if expected:
        assert [s.figure for s in symbols] == [s.figure for s in expected]
    else:  # an untrained model may say N everywhere: then no symbols at all
        assert symbols == []
    score = music21.converter.parse(str(path))
    measures = score.parts[0].getElementsByClass(music21.stream.Measure)
    assert len(measures) == 4


def test_a_model_without_a_melody_level_refuses_to_musicxml(tmp_path):
    plain = FractalMIDIModel(FractalMIDIConfig.from_json_file(PIANO_ONLY.with_name("tiny.json"))).eval()
    result = plain.generate(num_bars=1, seed=0)
    with pytest.raises(ValueError) as e:
        result.to_musicxml(tmp_path / "x.musicxml")
    assert str(e.value) == NO_MELODY
    assert not (tmp_path / "x.musicxml").exists()


def test_cli_musicxml_is_written_beside_the_midi(capsys, tmp_path, songs_model_dir):
    code, out, err = run(capsys, "generate", "--model", songs_model_dir, "--bars", 2, "--out", tmp_path / "x.mid",
                         "--musicxml", "--quiet")
    assert code == 0, err
    assert (tmp_path / "x.mid").is_file() and (tmp_path / "x.musicxml").is_file()
    assert "lead sheet:" in out
    music21.converter.parse(str(tmp_path / "x.musicxml"))


def test_cli_musicxml_is_refused_before_the_weights_load(capsys, tmp_path):
    """A config-only folder of a piano-only model (hub_configs/small.json): the refusal came
    from config.json alone."""
    config_only = tmp_path / "config_only"
    config_only.mkdir()
    shutil.copy(PIANO_ONLY, config_only / "config.json")
    for argv in (["generate", "--bars", 2], ["continue", "--input", ROOT / "tests/data/pop909/001/001.mid", "--bars", 1]):
        code, _, err = run(capsys, *argv, "--model", config_only, "--out", tmp_path / "x.mid", "--musicxml", "--quiet")
        assert code == 2
        assert err.strip() == f"fractalmidi: error: --musicxml: the model at {config_only} has no melody level"
    assert not list(tmp_path.glob("x.*"))


def test_musicxml_is_in_the_help(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    assert "--musicxml" in capsys.readouterr().out
