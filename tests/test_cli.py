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


# ------------------------------------------------------------------------------ generation commands
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A tiny, untrained model folder (speed and file handling do not need a trained one)."""
    import torch

    from fractalmidi import FractalMIDIConfig, FractalMIDIModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model")
    config = FractalMIDIConfig.from_json_file(Path(__file__).resolve().parents[1] / "hub_configs" / "tiny.json")
    FractalMIDIModel(config).save_pretrained(path)
    return path


def test_generate_writes_the_bars_asked_for(capsys, tmp_path, tiny_model):
    out_mid = tmp_path / "g.mid"
    code, out, _ = run(capsys, "generate", "--model", tiny_model, "--bars", 6, "--time-signature", "3/4",
                       "--seed", 3, "--out", out_mid, "--evaluate", "--plot", "--quiet",
                       "--density", "0.5,0.5,,1,1,0.25", "--tempo", "90,90,100,100,110,110")
    assert code == 0 and "pitch_entropy" in out and "density_pearson_r" in out
    piece, _ = read_midi(out_mid)
    assert piece.num_bars == 6 and piece.bar_lengths.tolist() == [12] * 6
    np.testing.assert_allclose(piece.bar_tempo(), [90, 90, 100, 100, 110, 110], atol=1e-3)
    assert out_mid.with_suffix(".png").stat().st_size > 1000
    again = tmp_path / "again.mid"
    run(capsys, "generate", "--model", tiny_model, "--bars", 6, "--time-signature", "3/4", "--seed", 3,
        "--out", again, "--quiet", "--density", "0.5,0.5,,1,1,0.25", "--tempo", "90,90,100,100,110,110")
    assert again.read_bytes() == out_mid.read_bytes()  # same seed, same file


def test_generate_several_samples_into_a_folder(capsys, tmp_path, tiny_model):
    code, _, _ = run(capsys, "generate", "--model", tiny_model, "--bars", 2, "--num-samples", 3,
                     "--out-dir", tmp_path / "many", "--quiet")
    assert code == 0 and len(list((tmp_path / "many").glob("*.mid"))) == 3


def test_inpaint_keeps_every_note_outside_the_bars(capsys, tmp_path, tiny_model):
    out_mid = tmp_path / "i.mid"
    code, _, _ = run(capsys, "inpaint", "--model", tiny_model, "--input", SONG, "--bars", "5-8,20-20",
                     "--out", out_mid, "--quiet")
    assert code == 0
    original, _ = read_midi(SONG, beats=DATA / "001" / "beat_midi.txt")
    result, _ = read_midi(out_mid)
    s = original.bar_starts
    inside = lambda n: ((n[:, 1] >= s[4]) & (n[:, 1] < s[8])) | ((n[:, 1] >= s[19]) & (n[:, 1] < s[20]))
    np.testing.assert_array_equal(original.notes[~inside(original.notes)], result.notes[~inside(result.notes)])
    np.testing.assert_array_equal(original.bar_starts, result.bar_starts)
    np.testing.assert_allclose(original.bar_tempo(), result.bar_tempo(), atol=1e-3)


def test_continue_keeps_the_whole_prompt(capsys, tmp_path, tiny_model):
    out_mid = tmp_path / "c.mid"
    code, _, _ = run(capsys, "continue", "--model", tiny_model, "--input", SONG, "--bars", 4, "--out", out_mid, "--quiet")
    assert code == 0
    original, _ = read_midi(SONG, beats=DATA / "001" / "beat_midi.txt")
    result, _ = read_midi(out_mid)
    assert result.num_bars == original.num_bars + 4
    before = result.notes[result.notes[:, 1] < original.num_steps]
    np.testing.assert_array_equal(before, original.notes)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["inpaint", "--input", str(SONG), "--bars", "70-80", "--out", "{tmp}/o.mid"], "bars 70-80 lie outside"),
        (["generate", "--bars", "4", "--density", "1,2", "--out", "{tmp}/o.mid"], "has 2 values for 4 bars"),
        (["generate", "--bars", "2", "--tempo", "5,100", "--out", "{tmp}/o.mid"], "tempo curve, bar 1: 5.0 is outside the allowed range 10.0-1000.0 BPM"),
        (["generate", "--bars", "2", "--density", "{tmp}/nope.json", "--out", "{tmp}/o.mid"], "nope.json: density curve file not found"),
        (["generate", "--bars", "2", "--iterations", "2,2", "--out", "{tmp}/o.mid"], "give one count per level (3 levels)"),
        (["generate", "--bars", "4", "--density", "inf,1,1,1", "--out", "{tmp}/o.mid"],
         "density curve, bar 1: must be a finite number in 0.0-4.0 onsets per step, got inf"),
        (["generate", "--bars", "1", "--density", "1e308", "--out", "{tmp}/o.mid"],
         "density curve, bar 1: 1e+308 is outside the allowed range 0.0-4.0"),
        (["generate", "--bars", "2", "--out", "{tmp}/missing/o.mid"], "/missing does not exist (create it, or use --out-dir"),
        (["generate", "--bars", "2", "--out", "{tmp}/o.mid", "--out-dir", "{tmp}"], "not both"),
        (["inpaint", "--input", "{tmp}", "--bars", "1-2", "--out", "{tmp}/o.mid"], "is a folder, not a MIDI file"),
        (["continue", "--input", "{tmp}/text.mid", "--bars", "2", "--out", "{tmp}/o.mid"], "text.mid: not a MIDI file"),
    ],
)
def test_bad_generation_input_is_one_line(capsys, tmp_path, tiny_model, argv, message):
    (tmp_path / "text.mid").write_text("hello")
    code, _, err = run(capsys, *[a.format(tmp=tmp_path) for a in argv], "--model", tiny_model, "--quiet")
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "o.mid").exists()


def test_missing_model_is_named(capsys, tmp_path):
    code, _, err = run(capsys, "generate", "--bars", 2, "--model", tmp_path / "none", "--out", tmp_path / "o.mid")
    assert code == 2 and "none: no model there" in err


@pytest.mark.parametrize("argv", [["generate", "--bars", "2", "--temperature", "0"],
                                  ["generate", "--bars", "2", "--cfg", "-1"],
                                  ["generate", "--bars", "2", "--top-p", "1.5"],
                                  ["generate", "--bars", "2", "--top-p", "0"],
                                  ["inpaint", "--input", "x.mid", "--bars", "0-3"]])
def test_bad_generation_arguments_are_refused_by_the_parser(capsys, argv):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2


@pytest.mark.parametrize(
    "argv, message",
    [
        (["generate", "--bars", "0"], "bars 0 is outside the allowed range 1-1024"),
        (["generate", "--bars", "2", "--iterations", "100000,1,1"], "iterations, level 1: 100000 is outside the allowed range 1-64"),
        (["generate", "--bars", "2", "--refine-rounds", "-5"], "refine rounds -5 is outside the allowed range 0-8"),
        (["generate", "--bars", "2", "--refine-ratio", "nan"], "refine ratio must be a finite number in 0.0-1.0"),
        (["generate", "--bars", "2", "--time-signature", "5/0"], "the denominator must be one of 1, 2, 4, 8, 16, 32"),
        (["generate", "--bars", "2", "--time-signature", "7/3"], "the denominator must be one of"),
        (["generate", "--bars", "2", "--seed", str(2**70)], "seed 1180591620717411303424 is outside the allowed range"),
        (["generate", "--bars", "2", "--temperature", "50"], "temperature 50.0 is outside the allowed range 0.1-2.0"),
        (["generate", "--bars", "2", "--num-samples", "0"], "number of samples 0 is outside the allowed range 1-64"),
        (["continue", "--input", "x.mid", "--bars", "-1"], "bars to add -1 is outside the allowed range"),
    ],
)
def test_argument_ranges_are_checked_before_any_model_loads(capsys, argv, message):
    """Every generation argument has a bound, said in the message; argparse refuses it while
    reading the arguments (the model path is never looked at: it does not exist here)."""
    with pytest.raises(SystemExit) as e:
        main(argv + ["--model", "/nonexistent/model"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and "Traceback" not in err


def test_curves_are_checked_against_the_models_range_before_its_weights_load(capsys, tmp_path, tiny_model):
    """A model folder whose weights are missing: a bad curve is still named, so the check
    came from config.json before from_pretrained."""
    config_only = tmp_path / "config_only"
    config_only.mkdir()
    shutil.copy(tiny_model / "config.json", config_only / "config.json")
    code, _, err = run(capsys, "generate", "--model", config_only, "--bars", 2, "--density", "0.5,9",
                       "--out", tmp_path / "o.mid")
    assert code == 2 and "density curve, bar 2: 9.0 is outside the allowed range 0.0-4.0" in err


def test_several_samples_with_out_are_numbered_beside_it(capsys, tmp_path, tiny_model):
    code, out, _ = run(capsys, "generate", "--model", tiny_model, "--bars", 2, "--num-samples", 2,
                       "--out", tmp_path / "x.mid", "--quiet")
    assert code == 0
    assert sorted(p.name for p in tmp_path.glob("*.mid")) == ["x_001.mid", "x_002.mid"]


def test_default_output_is_named_in_help_and_written_in_the_current_folder(capsys, tmp_path, tiny_model, monkeypatch):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    assert "default: fractalmidi.mid in the current folder" in " ".join(capsys.readouterr().out.split())
    monkeypatch.chdir(tmp_path)
    code, _, _ = run(capsys, "generate", "--model", tiny_model, "--bars", 2, "--quiet")
    assert code == 0 and (tmp_path / "fractalmidi.mid").is_file()


def test_out_dir_is_created(capsys, tmp_path, tiny_model):
    code, _, _ = run(capsys, "generate", "--model", tiny_model, "--bars", 2, "--out-dir", tmp_path / "new" / "dir", "--quiet")
    assert code == 0 and (tmp_path / "new" / "dir" / "fractalmidi.mid").is_file()


def test_evaluate_of_nothing_readable_is_one_line_and_status_2(capsys, tmp_path):
    (tmp_path / "notmidi.mid").write_text("hello")
    code, out, err = run(capsys, "evaluate", tmp_path / "notmidi.mid")
    assert code == 2 and out == "" and "nan" not in err.lower()
    assert err.startswith("fractalmidi: error:") and "notmidi.mid: not a MIDI file" in err and err.count("\n") == 1


@pytest.mark.parametrize("command", [["inspect", "{tmp}"], ["quantize", "{tmp}", "{tmp}/o.mid"]])
def test_a_folder_given_as_a_file_is_named_as_such(capsys, tmp_path, command):
    code, _, err = run(capsys, *[a.format(tmp=tmp_path) for a in command])
    assert code == 2 and "is a folder, not a MIDI file" in err


def test_top_p_and_temperature_reach_generate_or_default_to_the_model():
    from fractalmidi.cli import _generation_kwargs, build_parser

    args = build_parser().parse_args(["generate", "--bars", "2", "--top-p", "0.8", "--temperature", "1.2"])
    kw = _generation_kwargs(args, 2)
    assert kw["top_p"] == 0.8 and kw["temperature"] == 1.2
    kw = _generation_kwargs(build_parser().parse_args(["generate", "--bars", "2"]), 2)
    assert kw["top_p"] is None and kw["temperature"] is None  # generate then takes the model's defaults


def test_evaluate_reference_prints_the_frechet_distance(capsys):
    code, out, _ = run(capsys, "evaluate", SONG, "--reference", DATA)
    assert code == 0
    assert "per-bar feature Frechet distance to" in out and "reference files" in out
    assert "melody_step_share" in out and "MELODY track" in out  # POP909 has a MELODY track
    code, out, _ = run(capsys, "evaluate", DATA, "--reference", DATA, "--json")
    result = json.loads(out)
    assert result["frechet"]["distance"] == pytest.approx(0.0, abs=1e-4)  # a set against itself
    assert result["frechet"]["reference_files"] == len(list(DATA.glob("*/*.mid")))
    first = next(r for r in result["files"] if r["file"].endswith("001.mid"))
    assert first["melody"] == "MELODY track"
    tracks, _ = read_midi_tracks(SONG, beats=DATA / "001" / "beat_midi.txt")
    piece, _ = read_midi(SONG, beats=DATA / "001" / "beat_midi.txt")
    melody = next(p for name, p in tracks if name == "MELODY")
    expected = evaluate_piece(piece, melody)
    for k in ("melody_step_share", "melody_mean_leap", "repeated_bar_rate", "bar_similarity"):
        assert first[k] == pytest.approx(expected[k], abs=1e-9)


def test_evaluate_top_voice_without_a_melody_track_and_bars(capsys, tmp_path):
    code, out, _ = run(capsys, "evaluate", SONG, "--tracks", "PIANO", "--json", "--bars", 8)
    assert code == 0
    row = json.loads(out)["files"][0]
    assert row["melody"] == "top voice" and row["n_bars"] == 8 and row["first_bar"] >= 1
    code, _, err = run(capsys, "evaluate", SONG, "--bars", 10000)
    assert code == 2 and "10000 consecutive bars of 4/4" in err and err.count("\n") == 1


@pytest.mark.parametrize("ref, message", [("{tmp}/nowhere", "nowhere: reference folder not found"),
                                          ("{tmp}/empty", "--reference: no MIDI files"),
                                          ("{tmp}/file.mid", "must be a folder of MIDI files")])
def test_evaluate_bad_reference_is_one_line_and_status_2(capsys, tmp_path, ref, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.mid").write_text("x")
    code, out, err = run(capsys, "evaluate", SONG, "--reference", ref.format(tmp=tmp_path))
    assert code == 2 and out == ""
    assert err.startswith("fractalmidi: error:") and message in err and err.count("\n") == 1
