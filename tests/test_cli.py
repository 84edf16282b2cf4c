"""The `fractalmidi` command line: each subcommand on real files, and bad input as one line."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fractalmidi import read_midi, read_midi_tracks
from fractalmidi.cli import main
from fractalmidi.data import load_dataset_dir
from fractalmidi.metrics import evaluate_piece

DATA = Path(__file__).parent / "data" / "pop909"
SONG = DATA / "001" / "001.mid"


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_help_explains_every_command():
    out = subprocess.run([sys.executable, "-m", "fractalmidi.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for cmd in ("inspect", "quantize", "evaluate", "build-dataset"):
        assert cmd in out.stdout


def test_console_script_is_installed():
    exe = shutil.which("fractalmidi")
    assert exe, "the console script `fractalmidi` is not on PATH: run `pip install -e .`"
    out = subprocess.run([exe, "inspect", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--beats" in out.stdout


def test_inspect_json_reports_bars_structure_and_dropped_notes(capsys):
    code, out, _ = run(capsys, "inspect", SONG, "--json")
    assert code == 0
    info = json.loads(out)
    piece, report = read_midi(SONG, beats=DATA / "001" / "beat_midi.txt")
    assert info["grid"].startswith("beat file")  # found beside the file
    assert info["num_bars"] == piece.num_bars == len(info["bars"])
    assert info["notes_kept"] == len(piece.notes)
    assert info["notes_in_file"] == report.source_notes
    assert sum(info["notes_dropped"].values()) == report.source_notes - report.kept_notes
    density = [b["density"] for b in info["bars"]]
    np.testing.assert_allclose(density, piece.bar_density(), atol=1e-4)
    tempo = [b["tempo_bpm"] for b in info["bars"]]
    np.testing.assert_allclose(tempo, piece.bar_tempo(), atol=1e-3)
    assert {b["time_signature"] for b in info["bars"]} == {"4/4"}


def test_inspect_text_and_no_beats(capsys):
    code, out, _ = run(capsys, "inspect", SONG)
    assert code == 0 and "beat file" in out and "dropped" in out and "density" in out
    code, out, _ = run(capsys, "inspect", SONG, "--no-beats", "--json")
    assert code == 0 and json.loads(out)["grid"].startswith("ticks")


def test_quantize_keeps_tracks_and_reads_back_identically(capsys, tmp_path):
    out_mid = tmp_path / "q.mid"
    code, out, _ = run(capsys, "quantize", SONG, out_mid)
    assert code == 0 and out_mid.is_file() and "notes on" in out
    original, _ = read_midi_tracks(SONG, beats=DATA / "001" / "beat_midi.txt")
    back, _ = read_midi_tracks(out_mid)
    assert [name for name, _ in back] == [name for name, _ in original]
    for (_, a), (_, b) in zip(original, back):
        np.testing.assert_array_equal(a.notes, b.notes)
        np.testing.assert_array_equal(a.bar_starts, b.bar_starts)
        np.testing.assert_allclose(a.bar_tempo(), b.bar_tempo(), atol=1e-3)


def test_quantize_merge_and_steps_per_beat(capsys, tmp_path):
    out_mid = tmp_path / "m.mid"
    code, _, _ = run(capsys, "quantize", SONG, out_mid, "--merge", "--steps-per-beat", "8")
    assert code == 0
    tracks, _ = read_midi_tracks(out_mid, steps_per_beat=8)
    assert len(tracks) == 1
    merged, _ = read_midi(SONG, beats=DATA / "001" / "beat_midi.txt", steps_per_beat=8)
    np.testing.assert_array_equal(tracks[0][1].notes, merged.notes)


def test_evaluate_matches_metrics_and_summarizes(capsys, tmp_path):
    code, out, _ = run(capsys, "evaluate", DATA, "--json")
    assert code == 0
    result = json.loads(out)
    assert len(result["files"]) == len(list(DATA.glob("*/*.mid"))) and not result["failed"]
    first = next(r for r in result["files"] if r["file"].endswith("001.mid"))
    piece, _ = read_midi(SONG, beats=DATA / "001" / "beat_midi.txt")
    expected = evaluate_piece(piece)
    for k in ("pitch_entropy", "scale_consistency", "groove_consistency", "polyphony"):
        assert first[k] == pytest.approx(expected[k], abs=1e-9)
    values = [r["pitch_entropy"] for r in result["files"]]
    assert result["summary"]["pitch_entropy"]["mean"] == pytest.approx(np.mean(values))
    assert result["summary"]["pitch_entropy"]["std"] == pytest.approx(np.std(values))


def test_evaluate_lists_bad_files_and_keeps_the_rest(capsys, tmp_path):
    shutil.copy(SONG, tmp_path / "good.mid")
    (tmp_path / "bad.mid").write_text("not midi")
    code, out, err = run(capsys, "evaluate", tmp_path)
    assert code == 1  # something was skipped: scripts must notice
    assert "1 files evaluated" in out
    assert "bad.mid" in err and "not a MIDI file" in err


def test_build_dataset(capsys, tmp_path):
    code, out, _ = run(capsys, "build-dataset", DATA, tmp_path / "ds")
    assert code == 0
    report = json.loads(out)
    ds = load_dataset_dir(tmp_path / "ds")
    assert len(ds) == report["songs"] == len(list(DATA.glob("*/*.mid")))
    assert (tmp_path / "ds" / "build_report.json").is_file()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["inspect", "{tmp}/missing.mid"], "missing.mid: file not found"),
        (["inspect", "{tmp}/text.mid"], "text.mid: not a MIDI file"),
        (["inspect", str(SONG), "--beats", "{tmp}/nobeats.txt"], "nobeats.txt: beat file not found"),
        (["inspect", str(SONG), "--tracks", "DRUMS"], "no track named 'DRUMS'"),
        (["quantize", "{tmp}/text.mid", "{tmp}/out.mid"], "text.mid: not a MIDI file"),
        (["evaluate", "{tmp}/nowhere"], "nowhere: no such file or folder"),
    ],
)
def test_bad_input_is_one_line_and_status_2(capsys, tmp_path, argv, message):
    (tmp_path / "text.mid").write_text("hello")
    code, out, err = run(capsys, *[a.format(tmp=tmp_path) for a in argv])
    assert code == 2
    assert err.startswith("fractalmidi: error:") and message in err
    assert "Traceback" not in err and err.count("\n") == 1
    assert not (tmp_path / "out.mid").exists()  # no output written from bad input


@pytest.mark.parametrize("argv", [["inspect", str(SONG), "--steps-per-beat", "0"],
                                  ["inspect", str(SONG), "--pitch-range", "90-30"]])
def test_bad_arguments_are_refused_by_the_parser(capsys, argv):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert "Traceback" not in capsys.readouterr().err
