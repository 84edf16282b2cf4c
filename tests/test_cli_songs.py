"""The command line's song controls: --form, --key and --merge on the generation commands,
`arrange` (an accompaniment around a melody kept note for note) and `inpaint --keep`; each on
the tiny untrained song model (`songs_model_dir`), real POP909 melodies cropped to 8 bars."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from fractalmidi.cli import _monophonic, main
from fractalmidi.midi_io import read_midi, read_midi_tracks, read_song_midi, write_midi
from fractalmidi.piece import normalize_notes

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "pop909"
PIANO_ONLY = ROOT / "hub_configs" / "small.json"  # a model without chord and melody levels


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def crop_song(song: str, first: int, stop: int, path: Path, names: dict | None = None) -> dict:
    """Bars first..stop-1 (0-based) of POP909 song `song`, read on its beat file, written to
    `path` with every track (renamed by `names`); returns {name: cropped Piece}."""
    tracks, _ = read_midi_tracks(DATA / song / f"{song}.mid")  # the beat file beside it
    cropped = [((names or {}).get(name, name), piece.crop_bars(first, stop)) for name, piece in tracks]
    write_midi(cropped, path)
    return dict(cropped)


def bars_of(notes, piece, first, stop):
    """Rows of `notes` starting in bars first..stop-1 (0-based) of `piece`."""
    s = piece.bar_starts
    return (notes[:, 1] >= s[first]) & (notes[:, 1] < s[stop])


@pytest.fixture(scope="module")
def plain_model_dir(tmp_path_factory):
    """A tiny untrained model without melody and chord levels (hub_configs/tiny.json)."""
    import torch

    from fractalmidi import FractalMIDIConfig, FractalMIDIModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("plain_model")
    FractalMIDIModel(FractalMIDIConfig.from_json_file(ROOT / "hub_configs" / "tiny.json")).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def song_file(tmp_path_factory, songs_model_dir):
    """An 8-bar song the song model wrote: Melody and Piano tracks, chord markers, a key."""
    path = tmp_path_factory.mktemp("song") / "song.mid"
    assert main(["generate", "--model", str(songs_model_dir), "--bars", "8", "--key", "A:min", "--seed", "1",
                 "--out", str(path), "--quiet"]) == 0
    return path


# ------------------------------------------------------------------------------ --form, --key
def test_the_form_gives_the_bars_and_the_key_is_the_key_signature(capsys, tmp_path, songs_model_dir):
    out_mid = tmp_path / "f.mid"
    code, out, err = run(capsys, "generate", "--model", songs_model_dir, "--form", "A2B2A2", "--key", "Eb minor",
                         "--out", out_mid, "--quiet")
    assert code == 0, err
    assert "6 bars" in out and "form A2B2A2" in out and "key Eb:min" in out
    song = read_song_midi(out_mid)
    assert song.tracks[0][1].num_bars == 6 and song.key == "Eb:min"


def test_the_chords_give_the_bars_and_must_agree_with_the_form(capsys, tmp_path, songs_model_dir):
    code, out, err = run(capsys, "generate", "--model", songs_model_dir, "--chords", "C G Am", "--out",
                         tmp_path / "c.mid", "--quiet")
    assert code == 0 and "3 bars" in out, err
    code, _, err = run(capsys, "generate", "--model", songs_model_dir, "--chords", "C G Am", "--form", "A4",
                       "--out", tmp_path / "x.mid", "--quiet")
    assert code == 2 and "the form has 4" in err and "the chords have 3" in err and err.count("\n") == 1


def test_form_and_bars_that_disagree_are_one_line(capsys, tmp_path, songs_model_dir):
    code, _, err = run(capsys, "generate", "--model", songs_model_dir, "--form", "A4B4", "--bars", 6,
                       "--out", tmp_path / "x.mid", "--quiet")
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "the form has 8" in err and "bars is 6" in err
    assert not (tmp_path / "x.mid").exists()


def test_continue_and_inpaint_take_a_form_of_the_whole_piece(capsys, tmp_path, song_file, songs_model_dir):
    code, out, err = run(capsys, "continue", "--model", songs_model_dir, "--input", song_file, "--bars", 2,
                         "--form", "A4B4C2", "--out", tmp_path / "c.mid", "--quiet")
    assert code == 0 and "10 bars" in out and "form A4B4C2" in out, err
    code, _, err = run(capsys, "continue", "--model", songs_model_dir, "--input", song_file, "--bars", 2,
                       "--form", "A4B4", "--out", tmp_path / "x.mid", "--quiet")
    assert code == 2 and "--form has 8 bars, the piece 10 (8 of" in err and err.count("\n") == 1
    code, out, err = run(capsys, "inpaint", "--model", songs_model_dir, "--input", song_file, "--bars", "3-4",
                         "--form", "A4A4", "--key", "C", "--out", tmp_path / "i.mid", "--quiet")
    assert code == 0 and "form A4A4" in out and "key C:maj" in out, err
    assert read_song_midi(tmp_path / "i.mid").key == "C:maj"
    code, _, err = run(capsys, "inpaint", "--model", songs_model_dir, "--input", song_file, "--bars", "3-4",
                       "--form", "A4", "--out", tmp_path / "x.mid", "--quiet")
    assert code == 2 and "--form has 4 bars for a piece of 8 bars" in err
    assert not (tmp_path / "x.mid").exists()


@pytest.mark.parametrize("command", [["generate", "--bars", "4"],
                                     ["continue", "--input", "{song}", "--bars", "2"],
                                     ["inpaint", "--input", "{song}", "--bars", "1-2"],
                                     ["arrange", "--melody", "{song}"]])
@pytest.mark.parametrize("option, message", [
    (["--form", "A4X"], "fractalmidi: error: form: bad part 'X' at character 3 of 'A4X'"),
    (["--key", "H:maj"], "fractalmidi: error: key: 'H:maj' is not a key (e.g. G:maj"),
])
def test_a_bad_form_or_key_is_named_before_the_model_is_looked_at(capsys, tmp_path, command, option, message):
    """The model folder does not exist: the form or key error came first."""
    argv = [a.format(song=DATA / "001" / "001.mid") for a in command]
    code, out, err = run(capsys, *argv, *option, "--model", tmp_path / "nonexistent", "--out", tmp_path / "o.mid")
    assert code == 2 and out == ""
    assert err.startswith(message) and err.count("\n") == 1 and "no model there" not in err


def test_a_key_is_written_by_a_model_without_song_levels(capsys, tmp_path, plain_model_dir):
    out_mid = tmp_path / "k.mid"
    code, out, err = run(capsys, "generate", "--model", plain_model_dir, "--bars", 2, "--key", "D:maj",
                         "--out", out_mid, "--quiet")
    assert code == 0 and "key D:maj" in out, err
    assert read_song_midi(out_mid).key == "D:maj"
    assert len(read_midi_tracks(out_mid)[0]) == 1


# ------------------------------------------------------------------------------ --merge
def test_merge_writes_melody_and_accompaniment_in_one_track(capsys, tmp_path, songs_model_dir):
    apart, merged = tmp_path / "apart.mid", tmp_path / "merged.mid"
    for path, extra in ((apart, []), (merged, ["--merge"])):
        code, _, err = run(capsys, "generate", "--model", songs_model_dir, "--bars", 4, "--seed", 5,
                           "--out", path, "--quiet", *extra)
        assert code == 0, err
    two, _ = read_midi_tracks(apart)
    one, _ = read_midi_tracks(merged)
    assert [name for name, _ in two] == ["Melody", "Piano"] and [name for name, _ in one] == ["Piano"]
    assert len(two[0][1].notes) > 0
    expected, _ = normalize_notes(np.concatenate([p.notes for _, p in two]))
    np.testing.assert_array_equal(one[0][1].notes, expected)
    assert read_song_midi(merged).chords == read_song_midi(apart).chords


# ------------------------------------------------------------------------------ arrange
@pytest.mark.parametrize("song, first, stop, track", [("001", 4, 12, ["--track", "MELODY"]),
                                                      ("267", 2, 10, ["--track", "0"]),  # 6/4 and 3/4 bars
                                                      ("002", 4, 12, [])])  # found by its name
def test_arrange_keeps_every_melody_note_of_a_real_song(capsys, tmp_path, songs_model_dir, song, first, stop, track):
    crop_song(song, first, stop, tmp_path / "in.mid")
    melody, _ = read_midi(tmp_path / "in.mid", tracks=["MELODY"])  # the bars the melody lies on
    out_mid = tmp_path / "arranged.mid"
    code, out, err = run(capsys, "arrange", "--model", songs_model_dir, "--melody", tmp_path / "in.mid", *track,
                         "--out", out_mid, "--quiet")
    assert code == 0, err
    assert f"the melody is track MELODY, {len(melody.notes)} notes on {melody.num_bars} bars" in out
    song_out = read_song_midi(out_mid)
    assert [name for name, _ in song_out.tracks] == ["Melody", "Piano"]
    np.testing.assert_array_equal(song_out.track("Melody").notes, melody.notes)  # pitch, start, end, velocity
    piano = song_out.track("Piano")
    assert len(piano.notes) > 0
    np.testing.assert_array_equal(piano.time_signatures, melody.time_signatures)
    np.testing.assert_array_equal(piano.bar_starts, melody.bar_starts)
    np.testing.assert_allclose(piano.bar_tempo(), melody.bar_tempo(), atol=1e-3)  # the melody's tempo


def test_arrange_makes_an_overlapping_melody_monophonic_and_says_so(capsys, tmp_path, songs_model_dir):
    crop_song("580", 10, 18, tmp_path / "in.mid")  # its MELODY track has grace notes that overlap
    melody, _ = read_midi(tmp_path / "in.mid", tracks=["MELODY"])
    notes = melody.notes[np.lexsort((melody.notes[:, 0], melody.notes[:, 1]))]
    overlapping = notes[1:, 1] < notes[:-1, 2]
    assert overlapping.sum() >= 2
    code, out, err = run(capsys, "arrange", "--model", songs_model_dir, "--melody", tmp_path / "in.mid",
                         "--track", "melody", "--out", tmp_path / "a.mid", "--quiet")
    assert code == 0, err
    assert f"made monophonic: {int(overlapping.sum())} shortened to end where the next note starts" in out
    kept = read_song_midi(tmp_path / "a.mid").track("Melody").notes
    np.testing.assert_array_equal(kept[:, [0, 1, 3]], notes[:, [0, 1, 3]])  # no note lost, onsets as they were
    np.testing.assert_array_equal(kept[:-1][overlapping, 2], notes[1:][overlapping, 1])  # cut at the next onset
    np.testing.assert_array_equal(kept[:-1][~overlapping], notes[:-1][~overlapping])
    assert (kept[1:, 1] >= kept[:-1, 2]).all()


def test_monophonic_keeps_the_highest_of_notes_starting_together():
    line, shortened, dropped = _monophonic(np.array([[60, 0, 4, 90], [64, 0, 2, 80], [62, 2, 6, 70], [65, 5, 8, 60]]))
    assert line.tolist() == [[64, 0, 2, 80], [62, 2, 5, 70], [65, 5, 8, 60]]
    assert (shortened, dropped) == (1, 1)


def test_arrange_bars_may_add_free_bars_after_the_melody_only(capsys, tmp_path, songs_model_dir):
    crop_song("001", 4, 10, tmp_path / "in.mid")
    melody, _ = read_midi(tmp_path / "in.mid", tracks=["MELODY"])
    n = melody.num_bars
    code, out, err = run(capsys, "arrange", "--model", songs_model_dir, "--melody", tmp_path / "in.mid",
                         "--track", "MELODY", "--bars", n + 2, "--form", f"A{n}B2", "--out", tmp_path / "a.mid",
                         "--quiet")
    assert code == 0 and f"{n + 2} bars" in out and "2 free bars after it" in out and f"form A{n}B2" in out, err
    song = read_song_midi(tmp_path / "a.mid")
    assert song.tracks[0][1].num_bars == n + 2
    notes = song.track("Melody").notes
    end = melody.bar_starts[-1]
    np.testing.assert_array_equal(notes[notes[:, 1] < end], melody.notes)  # kept where it was given
    assert (notes[:, 1] >= end).any()  # the free bars get a melody of their own
    for extra, message in ((["--bars", n - 1], f"--bars is {n - 1} bars, fewer than the melody's {n} bars"),
                           (["--form", f"A{n + 1}"], f"--form has {n + 1} bars, the melody in"),
                           (["--chords", "C " * (n - 1)], f"--chords have {n - 1} bars, fewer than the melody's {n}")):
        code, _, err = run(capsys, "arrange", "--model", songs_model_dir, "--melody", tmp_path / "in.mid",
                           *extra, "--out", tmp_path / "x.mid", "--quiet")
        assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "x.mid").exists()


def test_arrange_refuses_a_model_without_a_melody_level_before_its_weights_load(capsys, tmp_path):
    """A config-only folder of a piano-only model (hub_configs/small.json): the refusal came
    from config.json alone."""
    config_only = tmp_path / "config_only"
    config_only.mkdir()
    shutil.copy(PIANO_ONLY, config_only / "config.json")
    code, out, err = run(capsys, "arrange", "--model", config_only, "--melody", DATA / "001" / "001.mid",
                         "--track", "MELODY", "--out", tmp_path / "x.mid", "--quiet")
    assert code == 2 and out == ""
    assert err == f"fractalmidi: error: arrange: the model at {config_only} has no melody level to keep a melody " \
                  f"in (a song model such as hub_configs/songs_tiny.json has one)\n"
    assert not (tmp_path / "x.mid").exists()


def test_arrange_of_a_polyphonic_file_without_a_melody_track_names_the_tracks(capsys, tmp_path, songs_model_dir):
    crop_song("001", 4, 8, tmp_path / "in.mid", names={"MELODY": "VOX"})
    code, out, err = run(capsys, "arrange", "--model", songs_model_dir, "--melody", tmp_path / "in.mid",
                         "--out", tmp_path / "x.mid", "--quiet")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "no track named Melody and the file is not monophonic (tracks: VOX, BRIDGE, PIANO)" in err
    assert "--track NAME or NUMBER" in err
    code, _, err = run(capsys, "arrange", "--model", songs_model_dir, "--melody", tmp_path / "in.mid",
                       "--track", "LEAD", "--out", tmp_path / "x.mid", "--quiet")
    assert code == 2 and "no track named 'LEAD'" in err
    assert not (tmp_path / "x.mid").exists()


def test_arrange_takes_a_monophonic_file_whole(capsys, tmp_path, songs_model_dir):
    tracks = crop_song("001", 4, 8, tmp_path / "all.mid")
    write_midi([("lead", tracks["MELODY"])], tmp_path / "lead.mid")
    code, out, err = run(capsys, "arrange", "--model", songs_model_dir, "--melody", tmp_path / "lead.mid",
                         "--merge", "--out", tmp_path / "a.mid", "--quiet")
    assert code == 0 and "the melody is track lead" in out, err
    (name, piece), = read_midi_tracks(tmp_path / "a.mid")[0]  # --merge: one track
    melody = read_midi(tmp_path / "lead.mid")[0].notes
    assert name == "Piano" and len(piece.notes) > len(melody)
    rows = {tuple(r) for r in piece.notes[:, :3].tolist()}
    assert all(tuple(r) in rows for r in melody[:, :3].tolist())


# ------------------------------------------------------------------------------ inpaint --keep
def test_inpaint_keep_melody_keeps_it_and_regenerates_the_piano_of_the_bars(capsys, tmp_path, songs_model_dir):
    tracks = crop_song("001", 4, 12, tmp_path / "in.mid")
    out_mid = tmp_path / "i.mid"
    code, out, err = run(capsys, "inpaint", "--model", songs_model_dir, "--input", tmp_path / "in.mid",
                         "--bars", "3-5", "--keep", "melody", "--seed", 2, "--out", out_mid, "--quiet")
    assert code == 0, err
    song = read_song_midi(out_mid)
    np.testing.assert_array_equal(song.track("Melody").notes, tracks["MELODY"].notes)  # every bar
    grid = tracks["PIANO"]
    before, _ = normalize_notes(np.concatenate([tracks["BRIDGE"].notes, tracks["PIANO"].notes]))
    piano = song.track("Piano").notes
    inside_before, inside_after = bars_of(before, grid, 2, 5), bars_of(piano, grid, 2, 5)
    np.testing.assert_array_equal(piano[~inside_after], before[~inside_before])  # doublings of the melody too
    assert not np.array_equal(piano[inside_after], before[inside_before])  # the chosen bars: new accompaniment


def test_inpaint_keep_needs_what_it_keeps(capsys, tmp_path, songs_model_dir, plain_model_dir):
    crop_song("001", 4, 8, tmp_path / "in.mid")
    cases = [(songs_model_dir, ["--keep", "melody", "--tracks", "BRIDGE,PIANO"],
              "--keep melody: {tmp}/in.mid has no track named Melody (tracks: BRIDGE, PIANO)"),
             (songs_model_dir, ["--keep", "chords"], "--keep chords: {tmp}/in.mid has no chord markers"),
             (plain_model_dir, ["--keep", "melody"], "--keep melody: the model at {plain} has no melody level")]
    for model, extra, message in cases:
        code, _, err = run(capsys, "inpaint", "--model", model, "--input", tmp_path / "in.mid", "--bars", "2-3",
                           *extra, "--out", tmp_path / "x.mid", "--quiet")
        assert code == 2 and message.format(tmp=tmp_path, plain=plain_model_dir) in err and err.count("\n") == 1
    assert not (tmp_path / "x.mid").exists()
    with pytest.raises(SystemExit) as e:
        main(["inpaint", "--input", "x.mid", "--bars", "1-2", "--keep", "rhythm"])
    assert e.value.code == 2 and "--keep: rhythm is not one of melody, chords" in capsys.readouterr().err


def test_inpaint_keep_chords_keeps_the_chord_markers(capsys, tmp_path, song_file, songs_model_dir):
    before = read_song_midi(song_file)
    assert before.chords
    out_mid = tmp_path / "i.mid"
    code, _, err = run(capsys, "inpaint", "--model", songs_model_dir, "--input", song_file, "--bars", "2-4",
                       "--keep", "chords,melody", "--seed", 3, "--out", out_mid, "--quiet")
    assert code == 0, err
    after = read_song_midi(out_mid)
    assert after.chords == before.chords
    np.testing.assert_array_equal(after.track("Melody").notes, before.track("Melody").notes)
    grid = before.tracks[0][1]
    a, b = before.track("Piano").notes, after.track("Piano").notes
    np.testing.assert_array_equal(b[~bars_of(b, grid, 1, 4)], a[~bars_of(a, grid, 1, 4)])
    code, _, err = run(capsys, "inpaint", "--model", songs_model_dir, "--input", song_file, "--bars", "2-4",
                       "--keep", "chords", "--chords", "C " * 8, "--out", tmp_path / "x.mid", "--quiet")
    assert code == 2 and "give --chords or --keep chords, not both" in err


def test_the_help_explains_arrange_keep_form_key_and_merge(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "arrange" in capsys.readouterr().out
    for command, options in (("inpaint", ("--keep", "--form", "--key", "--merge")),
                             ("arrange", ("--melody", "--track", "--bars", "--merge")),
                             ("generate", ("--form", "--key", "--merge"))):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        assert all(o in text for o in options)


def test_continue_and_inpaint_read_the_songs_melody_and_chords_as_context(capsys, tmp_path, song_file, songs_model_dir):
    """Without --keep, a song file's Melody track and chord markers are the melody and chords of
    the bars kept (the melody and chord levels read them); the new bars get their own."""
    before = read_song_midi(song_file)
    melody = before.track("Melody").notes
    grid = before.track("Piano")
    out_mid = tmp_path / "c.mid"
    code, out, err = run(capsys, "continue", "--model", songs_model_dir, "--input", song_file, "--no-beats",
                         "--bars", 4, "--seed", 5, "--out", out_mid, "--quiet")
    assert code == 0, err
    assert "Melody track is the melody of the bars kept" in out and "chord markers are the chords" in out
    after = read_song_midi(out_mid)
    kept = after.track("Melody").notes
    np.testing.assert_array_equal(kept[kept[:, 1] < grid.bar_starts[-1]], melody)
    assert (kept[:, 1] >= grid.bar_starts[-1]).any()  # the new bars' own melody
    end = grid.bar_starts[-1]
    assert [c for c in after.chords if c[0] < end] == [c for c in before.chords if c[0] < end][:-1] + [
        c for c in after.chords if c[0] < end][-1:]  # every chord of the kept bars (the last may run on)
    out_mid = tmp_path / "i.mid"
    code, out, err = run(capsys, "inpaint", "--model", songs_model_dir, "--input", song_file, "--no-beats",
                         "--bars", "3-4", "--seed", 6, "--out", out_mid, "--quiet")
    assert code == 0, err
    after = read_song_midi(out_mid).track("Melody").notes
    outside = ~bars_of(melody, grid, 2, 4)
    np.testing.assert_array_equal(after[~bars_of(after, grid, 2, 4)], melody[outside])


def test_sustain_lengthens_the_notes_from_the_command_line(capsys, tmp_path, songs_model_dir):
    lengths = {}
    for value in ("-3", "3"):
        out_mid = tmp_path / f"s{value}.mid"
        code, out, err = run(capsys, "generate", "--model", songs_model_dir, "--bars", 4, "--seed", 2,
                             "--sustain", value, "--merge", "--out", out_mid, "--quiet")
        assert code == 0, err
        piece, _ = read_midi(out_mid, beats=None)
        lengths[value] = float(np.mean(piece.notes[:, 2] - piece.notes[:, 1]))
    assert lengths["-3"] < lengths["3"]
    with pytest.raises(SystemExit) as stop:
        run(capsys, "generate", "--model", songs_model_dir, "--bars", 4, "--sustain", "7", "--out", tmp_path / "x.mid")
    assert stop.value.code == 2
    assert "argument --sustain: sustain 7.0 is outside the allowed range -4.0-4.0" in capsys.readouterr().err


def test_rhythm_repeat_from_the_command_line(capsys, tmp_path, songs_model_dir):
    """--rhythm-repeat 1 with a one-phrase form: every bar plays at least where the first bar
    does (its rhythm, plus the bar's own melody onsets); out of range, a one-line error."""
    out_mid = tmp_path / "r.mid"
    code, out, err = run(capsys, "generate", "--model", songs_model_dir, "--form", "A4", "--seed", 2,
                         "--rhythm-repeat", "1", "--merge", "--out", out_mid, "--quiet")
    assert code == 0, err
    piece, _ = read_midi(out_mid, beats=None)
    steps = [set(piece.notes[(piece.notes[:, 1] >= 16 * b) & (piece.notes[:, 1] < 16 * b + 16), 1] % 16)
             for b in range(4)]
    assert steps[0] and all(steps[0] <= s for s in steps[1:])
    with pytest.raises(SystemExit) as stop:
        run(capsys, "generate", "--model", songs_model_dir, "--bars", 4, "--rhythm-repeat", "2", "--out", tmp_path / "x.mid")
    assert stop.value.code == 2
    assert "argument --rhythm-repeat: rhythm repeat 2.0 is outside the allowed range 0.0-1.0" in capsys.readouterr().err


def test_rhythm_prior_from_the_command_line(capsys, tmp_path, songs_model_dir):
    """--rhythm-prior reaches generate (0 runs on a model without rhythm_patterns); out of range,
    a one-line error naming the option and its range."""
    code, out, err = run(capsys, "generate", "--model", songs_model_dir, "--bars", 2, "--rhythm-prior", "0",
                         "--out", tmp_path / "p.mid", "--quiet")
    assert code == 0, err
    with pytest.raises(SystemExit) as stop:
        run(capsys, "generate", "--model", songs_model_dir, "--bars", 2, "--rhythm-prior", "2.5", "--out", tmp_path / "x.mid")
    assert stop.value.code == 2
    assert "argument --rhythm-prior: rhythm prior 2.5 is outside the allowed range 0.0-2.0" in capsys.readouterr().err
