"""Tests for fractalmidi.data: finding files, rows, building and saving datasets, the split,
training windows, transposition and the training transform. Uses the POP909 sample in
tests/data/pop909 (see conftest.py) and bad files made in tmp_path."""

import json
import shutil
from pathlib import Path

import datasets
import numpy as np
import pytest

from fractalmidi import data as D
from fractalmidi.errors import InputError
from fractalmidi.piece import Piece

POP909_DIR = Path(__file__).resolve().parent / "data" / "pop909"  # as in conftest.py


def pop909_songs() -> list[Path]:
    """The sample's song folders (NNN/NNN.mid with beat_midi.txt)."""
    return sorted(d for d in POP909_DIR.iterdir() if (d / f"{d.name}.mid").is_file() and (d / "beat_midi.txt").is_file())


# --------------------------------------------------------------------------- helpers
def assert_same_piece(a: Piece, b: Piece):
    assert a.steps_per_beat == b.steps_per_beat
    assert a.pitch_range == b.pitch_range
    for name in ("notes", "bar_starts", "time_signatures", "tempo_steps", "tempo_bpm"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and np.array_equal(x, y), name


def odd_piece() -> Piece:
    """Mixed metres, a tempo change in every bar, a non-default grid and pitch range."""
    notes = [[30, 0, 3, 100], [90, 2, 20, 1], [60, 12, 13, 64], [60, 13, 40, 127], [45, 30, 42, 80]]
    return Piece.from_bars(
        [(3, 4), (4, 4), (6, 8), (5, 8)], bpm=[100.0, 120.5, 90.123456789, 61.0],
        notes=notes, steps_per_beat=4, pitch_range=(30, 90),
    )


def copy_sample(dest: Path, songs=None) -> Path:
    """The POP909 sample (or some of its songs) copied to `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    for d in pop909_songs():
        if songs is None or d.name in songs:
            shutil.copytree(d, dest / d.name)
    return dest


@pytest.fixture(scope="module")
def sample_ds():
    ds, report = D.build_dataset(POP909_DIR, progress=False)
    return ds, report


def row_of(ds, song_id: str) -> dict:
    return ds[ds["song_id"].index(song_id)]


def test_sample_is_there():
    assert len(pop909_songs()) >= 3, "tests/data/pop909 should hold a few POP909 songs"


# --------------------------------------------------------------------------- finding files
def test_find_midi_files_pairs_beat_files(tmp_path):
    pairs = D.find_midi_files(POP909_DIR)
    assert [p.parent.name for p, _ in pairs] == [d.name for d in pop909_songs()]
    assert all(b == p.with_name("beat_midi.txt") for p, b in pairs)

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.mid").write_bytes(b"")
    (tmp_path / "a" / "x.beats.txt").write_text("0 0 1\n0.5 0 0\n")
    (tmp_path / "two").mkdir()  # two songs, one folder-wide beat file: it belongs to neither
    for name in ("p.mid", "q.MIDI", "beat_midi.txt", "notes.txt"):
        (tmp_path / "two" / name).write_bytes(b"")
    (tmp_path / "z.midi").write_bytes(b"")
    pairs = D.find_midi_files(tmp_path)
    rel = [(p.relative_to(tmp_path).as_posix(), b and b.relative_to(tmp_path).as_posix()) for p, b in pairs]
    assert rel == [("a/x.mid", "a/x.beats.txt"), ("two/p.mid", None), ("two/q.MIDI", None), ("z.midi", None)]

    with pytest.raises(InputError, match="not a folder"):
        D.find_midi_files(tmp_path / "missing")


def test_song_ids():
    assert D.song_id_for("001/001.mid") == "001"
    assert D.song_id_for("rock/song.midi") == "rock/song"
    assert D.song_id_for("a.mid") == "a"


# --------------------------------------------------------------------------- rows
def test_row_round_trip_real_songs(pop909_song):
    from fractalmidi.midi_io import read_midi

    piece, report = read_midi(pop909_song / f"{pop909_song.name}.mid", beats=pop909_song / "beat_midi.txt")
    row = D.piece_to_row(piece, pop909_song.name, f"{pop909_song.name}/{pop909_song.name}.mid", "b.txt", report)
    assert_same_piece(D.row_to_piece(row), piece)
    # through Arrow with the fixed schema too (float64 tempi, uint8 pitches)
    stored = datasets.Dataset.from_list([row], features=D.FEATURES)[0]
    assert_same_piece(D.row_to_piece(stored), piece)
    assert stored["n_notes"] == len(piece.notes) and stored["n_bars"] == piece.num_bars
    assert len(stored["bar_tempo"]) == len(stored["bar_density"]) == piece.num_bars
    summary = json.loads(stored["read_report"])
    assert summary["kept_notes"] == len(piece.notes)
    assert summary["dropped"] == report.dropped and summary["changed"] == report.changed


def test_row_round_trip_odd_piece():
    piece = odd_piece()
    row = D.piece_to_row(piece, "odd", "odd.mid")
    assert row["beat_file"] == "" and row["used_beats"] is False
    assert set(row) == set(D.FEATURES)
    stored = datasets.Dataset.from_list([row], features=D.FEATURES)[0]
    assert_same_piece(D.row_to_piece(stored), piece)
    np.testing.assert_allclose(stored["bar_tempo"], piece.bar_tempo(), rtol=1e-6)


# --------------------------------------------------------------------------- building
def test_build_skips_bad_files_and_keeps_the_rest(tmp_path):
    root = copy_sample(tmp_path / "midi")
    good = len(pop909_songs())
    (root / "text.mid").write_text("this is not MIDI\n")
    full = (root / "001" / "001.mid").read_bytes()
    (root / "bad").mkdir()
    (root / "bad" / "truncated.mid").write_bytes(full[: len(full) // 2])
    (root / "empty.midi").write_bytes(b"")

    ds, report = D.build_dataset(root, progress=False)
    assert len(ds) == report.songs == good and report.files == good + 3
    assert ds.features == D.FEATURES
    reasons = {s["source"]: s["reason"] for s in report.skipped}
    assert set(reasons) == {"text.mid", "bad/truncated.mid", "empty.midi"}
    assert "not a MIDI file" in reasons["text.mid"]
    assert "not a readable MIDI file" in reasons["bad/truncated.mid"]
    assert "empty" in reasons["empty.midi"]
    assert sorted(ds["song_id"]) == [d.name for d in pop909_songs()]
    assert all(ds["used_beats"]) and report.with_beat_file == good
    assert ds["source"][0] == "001/001.mid" and ds["beat_file"][0] == "001/beat_midi.txt"
    assert report.notes == sum(ds["n_notes"]) and report.bars == sum(ds["n_bars"])


def test_build_without_beats_uses_ticks(tmp_path):
    root = copy_sample(tmp_path / "midi", songs={"001"})
    ds, _ = D.build_dataset(root, use_beats=False, progress=False)
    assert ds["used_beats"] == [False] and ds["beat_file"] == [""]


def test_build_all_bad_gives_empty_dataset(tmp_path):
    (tmp_path / "x.mid").write_bytes(b"")
    ds, report = D.build_dataset(tmp_path, progress=False)
    assert len(ds) == 0 and ds.features == D.FEATURES and len(report.skipped) == 1


def test_build_in_worker_processes_gives_the_same_rows(sample_ds):
    ds, _ = sample_ds
    ds2, _ = D.build_dataset(POP909_DIR, num_proc=2, progress=False)
    assert ds2.to_dict() == ds.to_dict()


# --------------------------------------------------------------------------- split
def test_split_is_deterministic_and_stable_when_files_are_added(tmp_path):
    root = copy_sample(tmp_path / "midi")
    first, _ = D.build_dataset(root, validation_fraction=0.5, progress=False)
    again, _ = D.build_dataset(root, validation_fraction=0.5, progress=False)
    assert first["split"] == again["split"]
    shutil.copytree(root / "001", root / "999")
    (root / "999" / "001.mid").rename(root / "999" / "999.mid")
    more, _ = D.build_dataset(root, validation_fraction=0.5, progress=False)
    before = dict(zip(first["song_id"], first["split"]))
    after = dict(zip(more["song_id"], more["split"]))
    assert len(after) == len(before) + 1
    assert all(after[s] == split for s, split in before.items())


def test_split_fraction():
    ids = [f"{i:04d}" for i in range(4000)]
    share = np.mean([D.split_of(s, 0.05) == "validation" for s in ids])
    assert 0.04 < share < 0.06
    assert {D.split_of(s, 0.0) for s in ids[:50]} == {"train"}
    assert {D.split_of(s, 1.0) for s in ids[:50]} == {"validation"}


def test_split_dataset(sample_ds):
    ds, _ = sample_ds
    ds = ds.map(lambda r, i: {"split": "validation" if i == 0 else "train"}, with_indices=True)
    parts = D.split_dataset(ds)
    assert len(parts["validation"]) == 1 and len(parts["train"]) == len(ds) - 1
    assert set(parts["train"]["split"]) == {"train"}


# --------------------------------------------------------------------------- saving
def test_save_and_load_round_trip(tmp_path, sample_ds):
    out = tmp_path / "out" / "pop909_ds"
    ds, report = D.build_dataset(POP909_DIR, out, validation_fraction=0.5, progress=False)
    saved = json.loads((out / D.REPORT_FILE).read_text())
    assert saved["songs"] == len(ds) and saved["skipped"] == [] and saved["size_bytes"] > 0
    assert report.size_bytes == saved["size_bytes"]

    loaded = D.load_dataset_dir(out)
    assert loaded.features == D.FEATURES
    assert loaded.to_dict() == sample_ds[0].map(lambda r: {"split": D.split_of(r["song_id"], 0.5)}).to_dict()
    for a, b in zip(loaded, ds):
        assert_same_piece(D.row_to_piece(a), D.row_to_piece(b))
    train, val = D.load_dataset_dir(out, "train"), D.load_dataset_dir(out, "validation")
    assert len(train) + len(val) == len(ds)
    assert set(train["split"]) <= {"train"} and set(val["split"]) <= {"validation"}
    with pytest.raises(InputError, match="split"):
        D.load_dataset_dir(out, "test")

    # rebuilding replaces the previous build; nothing temporary is left beside it
    D.build_dataset(POP909_DIR, out, progress=False)
    assert [p.name for p in out.parent.iterdir()] == ["pop909_ds"]
    assert len(D.load_dataset_dir(out)) == len(ds)


def test_save_refuses_to_replace_another_folder(tmp_path):
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "precious.txt").write_text("x")
    with pytest.raises(InputError, match="refusing"):
        D.build_dataset(POP909_DIR, keep, progress=False)
    assert (keep / "precious.txt").read_text() == "x"


def test_load_rejects_other_datasets(tmp_path):
    datasets.Dataset.from_dict({"a": [1]}).save_to_disk(str(tmp_path / "other"))
    with pytest.raises(InputError, match="columns missing"):
        D.load_dataset_dir(tmp_path / "other")


# --------------------------------------------------------------------------- windows
def test_window_starts_cover_every_bar():
    piece = Piece.from_bars([(4, 4)] * 10)
    assert D.window_starts(piece, 4, 2) == [0, 2, 4, 6]
    assert D.window_starts(piece, 4) == [0, 4, 6]  # the last window ends at the last bar
    assert D.window_starts(piece, 10) == [0]
    assert D.window_starts(piece, 16) == [0]  # shorter than a window: one, cropped shorter
    row = D.piece_to_row(piece, "x", "x.mid")
    assert D.window_starts(row, 3, 3) == D.window_starts(piece, 3, 3) == [0, 3, 6, 7]
    with pytest.raises(InputError):
        D.window_starts(piece, 0)


def test_crops_are_bar_aligned(sample_ds):
    piece = D.row_to_piece(row_of(sample_ds[0], "003"))  # 2/4, 3/4 and 4/4 bars
    for first in D.window_starts(piece, 8, 4):
        window = D.crop(piece, first, 8)
        assert window.num_bars == 8
        assert np.array_equal(window.bar_starts, piece.bar_starts[first : first + 9] - piece.bar_starts[first])
        assert np.array_equal(window.time_signatures, piece.time_signatures[first : first + 8])
        s0, s1 = piece.bar_starts[first], piece.bar_starts[first + 8]
        inside = piece.notes[(piece.notes[:, 1] >= s0) & (piece.notes[:, 1] < s1)]
        assert np.array_equal(window.notes[:, [0, 1, 3]], inside[:, [0, 1, 3]] - [0, s0, 0])
    tail = D.crop(piece, piece.num_bars - 3, 8)  # past the end: shorter, not padded
    assert tail.num_bars == 3
    with pytest.raises(InputError):
        D.crop(piece, piece.num_bars, 8)


def test_random_crop_is_reproducible(sample_ds):
    row = sample_ds[0][0]
    n_bars = row["n_bars"]
    draws = [D.random_crop(row, 8, np.random.default_rng(7)) for _ in range(2)]
    assert draws[0][1] == draws[1][1]
    assert_same_piece(draws[0][0], draws[1][0])
    g = np.random.default_rng(0)
    firsts = []
    for _ in range(50):
        window, first = D.random_crop(row, 8, g)
        assert window.num_bars == 8 and 0 <= first <= n_bars - 8
        firsts.append(first)
    assert len(set(firsts)) > 10
    short = Piece.from_bars([(4, 4)] * 3)
    assert D.random_crop(short, 8, g)[0].num_bars == 3


# --------------------------------------------------------------------------- transposition
def test_transpose_stays_in_range_and_is_reproducible():
    # lowest note 23, highest 105: shifts allowed -2 .. +3 of the asked -5 .. +5
    piece = Piece.from_bars([(4, 4)], notes=[[23, 0, 4, 90], [60, 4, 8, 90], [105, 8, 16, 90]])
    g = np.random.default_rng(1)
    shifts = set()
    for _ in range(200):
        out, shift = D.augment_transpose(piece, 5, generator=g)
        assert -2 <= shift <= 3
        assert np.array_equal(out.notes[:, 0], piece.notes[:, 0] + shift)
        assert np.array_equal(out.notes[:, 1:], piece.notes[:, 1:])
        shifts.add(shift)
    assert shifts == set(range(-2, 4))
    a = [D.augment_transpose(piece, 5, generator=np.random.default_rng(3))[1] for _ in range(2)]
    assert a[0] == a[1]
    assert D.augment_transpose(piece, 0, generator=g)[1] == 0
    assert D.augment_transpose(Piece.from_bars([(4, 4)]), 5, generator=g)[1] == 0  # no notes


# --------------------------------------------------------------------------- training transform
def test_train_transform_shapes(sample_ds):
    ds, _ = sample_ds
    view = ds.with_transform(D.make_train_transform(num_bars=4, max_shift=5, seed=0))
    i = ds["song_id"].index("003")  # mixed metres, so T is the sum of the window's bar lengths
    ex = view[i]
    T, B = len(ex["bar_index"]), len(ex["bar_tempo"])
    assert B == 4
    assert ex["roll"].shape == (3, T, 88) and ex["roll"].dtype == np.uint8
    assert T == ex["time_signatures"][:, 0] @ (16 // ex["time_signatures"][:, 1])
    piece = D.row_to_piece(ds[i])
    window = D.crop(piece, ex["first_bar"], 4)
    assert np.array_equal(ex["time_signatures"], window.time_signatures)
    bar_len = window.bar_lengths[ex["bar_index"]]
    assert np.all((0 <= ex["bar_position"]) & (ex["bar_position"] < bar_len))
    assert np.array_equal(ex["bar_index"], np.repeat(np.arange(B), window.bar_lengths))
    np.testing.assert_allclose(ex["bar_tempo"], window.bar_tempo(), rtol=1e-6)
    np.testing.assert_allclose(ex["bar_density"], window.bar_density(), rtol=1e-6)
    # the roll is the window transposed
    shifted, _ = window.transpose(ex["shift"])
    assert np.array_equal(ex["roll"], shifted.to_roll())

    batch = view[:3]  # batched access goes through the same transform
    assert len(batch["roll"]) == 3


def test_train_transform_is_seeded(sample_ds):
    ds, _ = sample_ds
    a = ds.with_transform(D.make_train_transform(8, 5, seed=11))
    b = ds.with_transform(D.make_train_transform(8, 5, seed=11))
    for i in range(len(ds)):
        x, y = a[i], b[i]
        assert (x["first_bar"], x["shift"]) == (y["first_bar"], y["shift"])
        assert np.array_equal(x["roll"], y["roll"])


def test_collate_pads_to_the_longest(sample_ds):
    ds, _ = sample_ds
    pieces = [D.crop(D.row_to_piece(row_of(ds, "001")), 0, 2), D.crop(D.row_to_piece(row_of(ds, "003")), 0, 3)]
    examples = [D.dense_example(p) for p in pieces]
    batch = D.collate(examples)
    T = max(p.num_steps for p in pieces)
    assert batch["roll"].shape == (2, 3, T, 88)
    assert batch["bar_tempo"].shape == batch["bar_mask"].shape == (2, 3)
    for i, p in enumerate(pieces):
        assert batch["step_mask"][i].sum() == p.num_steps and batch["bar_mask"][i].sum() == p.num_bars
        assert np.array_equal(batch["roll"][i, :, : p.num_steps], p.to_roll())
        assert np.all(batch["bar_index"][i, p.num_steps :] == -1)


# --------------------------------------------------------------------------- structure annotations
STRUCTURE_DIR = Path(__file__).resolve().parent / "data" / "pop909-structure"  # 001 002 003 267 580


@pytest.fixture(scope="module")
def structure_ds():
    return D.build_dataset(POP909_DIR, progress=False, structure_dir=STRUCTURE_DIR)


def copy_structure(dest: Path, songs) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for s in songs:
        shutil.copytree(STRUCTURE_DIR / s, dest / s)
    return dest


def assert_structure_masked(row):
    assert not any(row["bar_label_mask"]) and not any(row["beat_chord_mask"]) and not any(row["bar_on_grid"])
    assert set(row["bar_letter"]) <= {""} and set(row["bar_phrase"]) <= {-1} and set(row["bar_phrase_position"]) <= {-1}
    assert set(row["bar_phrase_length"]) <= {0} and not any(row["bar_melodic"])
    assert set(row["beat_root"]) <= {-1} and set(row["beat_quality"]) <= {-1} and set(row["beat_bass"]) <= {-1}
    assert row["melody_pitch"] == row["melody_start"] == row["melody_end"] == []
    assert not row["aligned_well"] and row["structure_note"]


def test_build_dataset_without_structure_is_as_before(sample_ds, structure_ds):
    ds, report = sample_ds
    assert ds.features == D.FEATURES  # no structure columns at all
    assert "structure" not in report.as_dict()
    with_s, _ = structure_ds
    # the note, bar and metadata columns are the same with the annotations
    assert with_s.select_columns(list(D.FEATURES)).to_dict() == ds.to_dict()


def test_build_dataset_structure_columns_line_up_with_the_rows_bars(structure_ds):
    from fractalmidi.structure import QUALITIES, align_song

    ds, report = structure_ds
    assert ds.features == datasets.Features({**D.FEATURES, **D.STRUCTURE_FEATURES})
    for row in ds:
        nb, nbeat = row["n_bars"], row["n_steps"] // row["steps_per_beat"]
        for k in ("bar_label_mask", "bar_on_grid", "bar_letter", "bar_phrase", "bar_phrase_position",
                  "bar_phrase_length", "bar_melodic"):
            assert len(row[k]) == nb, k
        for k in ("beat_chord_mask", "beat_root", "beat_quality", "beat_bass"):
            assert len(row[k]) == nbeat, k
        if row["structure_status"] != "aligned":
            continue
        # the same bars as the alignment read on the same beat file, and its labels on them
        a = align_song(POP909_DIR / row["source"], STRUCTURE_DIR / row["song_id"])
        assert a.bar_starts.tolist() == row["bar_starts"]
        assert row["bar_letter"] == a.bar_letter and row["bar_label_mask"] == a.bar_mask.tolist()
        assert row["bar_phrase_position"] == a.bar_position.tolist()
        assert row["beat_root"] == a.beat_root.tolist() and row["beat_quality"] == a.beat_quality.tolist()
        assert row["align_shift_beats"] == a.shift_beats and row["form"] == a.form and row["key"] == a.key
        assert row["align_match"] == pytest.approx(a.match, abs=1e-6) and row["aligned_well"]
        assert sum(row["bar_label_mask"]) > 0.8 * nb and sum(row["beat_chord_mask"]) > 0.8 * nbeat
        # labels: a phrase's bars count 0 .. length - 1; melodic = upper-case letter
        for m, letter, pos, length, mel in zip(row["bar_label_mask"], row["bar_letter"], row["bar_phrase_position"],
                                               row["bar_phrase_length"], row["bar_melodic"]):
            if m:
                assert 0 <= pos < length and mel == letter.isupper()
        q = [x for m, x in zip(row["beat_chord_mask"], row["beat_quality"]) if m]
        assert all(-1 <= x < len(QUALITIES) for x in q)
        assert 0 <= row["key_tonic"] < 12 and row["key_mode"] in (0, 1)
        # the melody: inside the piece, sorted, mostly on the row's own notes
        start, end, pitch = (np.array(row[k]) for k in ("melody_start", "melody_end", "melody_pitch"))
        assert len(start) > 0 and start.min() >= 0 and end.max() <= row["n_steps"] and (end > start).all()
        assert (np.diff(start) >= 0).all()
        notes = set(zip(row["pitch"], row["start"]))
        assert np.mean([(p, s) in notes for p, s in zip(pitch, start)]) >= 0.8
    assert [r for r in ds["structure_status"]].count("aligned") == 4


def test_build_dataset_badly_aligned_song_keeps_its_notes_masked(sample_ds, structure_ds):
    ds, report = structure_ds
    row = row_of(ds, "580")
    assert row["structure_status"] == "not_aligned" and "match" in row["structure_note"]
    assert row["align_match"] < 0.8
    assert_structure_masked(row)
    assert row["form"] and row["key"]  # song-level annotations kept
    assert row["n_notes"] == row_of(sample_ds[0], "580")["n_notes"] > 0
    s = report.structure
    assert s["songs"] == s["annotated"] == 5 and s["aligned_well"] == 4
    assert [x["song_id"] for x in s["not_aligned_well"]] == ["580"]
    assert s["no_annotation"] == [] and s["errors"] == []
    cov = s["coverage"]
    assert cov["bars"] == sum(ds["n_bars"]) and 0 < cov["labelled_bars"] < cov["bars"]
    assert cov["labelled_bars"] == sum(sum(m) for m in ds["bar_label_mask"])
    assert cov["melody_notes"] == sum(len(m) for m in ds["melody_pitch"])


def test_build_dataset_structure_missing_and_broken_annotations_are_masked(tmp_path):
    sdir = copy_structure(tmp_path / "structure", ["001", "003", "267", "580"])  # 002 missing
    chords = sdir / "003" / "finalized_chord.txt"
    chords.write_text("C:maj [0, 4, 7] 0 4\nC:wibble [0] 0 4\n")
    ds, report = D.build_dataset(POP909_DIR, progress=False, structure_dir=sdir)
    assert len(ds) == 5  # nothing dropped
    missing, broken = row_of(ds, "002"), row_of(ds, "003")
    assert missing["structure_status"] == "no_annotation" and missing["form"] == "" and missing["key_tonic"] == -1
    assert broken["structure_status"] == "error" and "finalized_chord.txt" in broken["structure_note"]
    for row in (missing, broken):
        assert_structure_masked(row)
        assert row["n_notes"] > 0
    assert row_of(ds, "001")["structure_status"] == "aligned"
    s = report.structure
    assert s["no_annotation"] == ["002"]
    assert [e["song_id"] for e in s["errors"]] == ["003"] and "wibble" in s["errors"][0]["reason"]
    assert s["annotated"] == 3 and s["aligned_well"] == 2


def test_build_dataset_structure_checks_the_bars(tmp_path, monkeypatch):
    from fractalmidi import structure as S

    real = S.align_song

    def shifted(*args, **kwargs):  # an alignment whose bars are not the row's
        a = real(*args, **kwargs)
        a.bar_starts = a.bar_starts.copy()
        a.bar_starts[1] += 1
        return a

    monkeypatch.setattr(S, "align_song", shifted)
    ds, report = D.build_dataset(POP909_DIR, progress=False, structure_dir=STRUCTURE_DIR)
    assert set(ds["structure_status"]) == {"error"}
    assert all("bars differ" in e["reason"] for e in report.structure["errors"])
    for row in ds:
        assert_structure_masked(row)


def test_build_dataset_structure_needs_four_steps_per_beat(tmp_path):
    songs = copy_sample(tmp_path / "midi", ["001"])
    ds, report = D.build_dataset(songs, progress=False, steps_per_beat=8, structure_dir=STRUCTURE_DIR)
    assert ds[0]["structure_status"] == "error" and "steps per beat" in ds[0]["structure_note"]
    assert len(ds[0]["beat_root"]) == ds[0]["n_steps"] // 8
    with pytest.raises(InputError, match="structure annotation folder not found"):
        D.build_dataset(songs, progress=False, structure_dir=tmp_path / "nowhere")


def test_build_dataset_structure_saved_loaded_and_in_workers(tmp_path, structure_ds):
    out = tmp_path / "ds"
    ds, report = D.build_dataset(POP909_DIR, out, progress=False, num_proc=2, structure_dir=STRUCTURE_DIR)
    saved = json.loads((out / D.REPORT_FILE).read_text())
    assert saved["structure"] == report.structure == structure_ds[1].structure
    loaded = D.load_dataset_dir(out)
    assert loaded.features == structure_ds[0].features
    assert loaded.to_dict() == structure_ds[0].to_dict()


def test_train_transform_with_structure_columns_adds_only_the_annotations(sample_ds, structure_ds):
    """The structure columns change none of the examples' other fields (same seed, same
    crops and transpositions); they add the melody and chord targets and the form and key
    inputs."""
    plain = sample_ds[0].with_transform(D.make_train_transform(4, seed=3))
    with_s = structure_ds[0].with_transform(D.make_train_transform(4, seed=3))
    a, b = plain[0:5], with_s[0:5]
    assert set(b) == set(a) | {"melody", "chords", "form", "key"}
    for k in a:
        for x, y in zip(a[k], b[k]):
            assert np.array_equal(np.asarray(x), np.asarray(y)), k
    batch = D.collate([with_s[i] for i in range(len(with_s))])
    assert batch["roll"].shape[0] == 5


def test_build_dataset_cli_structure(capsys, tmp_path):
    from fractalmidi.cli import main

    code = main(["build-dataset", str(POP909_DIR), str(tmp_path / "ds"), "--structure", str(STRUCTURE_DIR)])
    out = capsys.readouterr().out
    assert code == 0
    report = json.loads(out)
    assert report["structure"]["aligned_well"] == 4
    assert [x["song_id"] for x in report["structure"]["not_aligned_well"]] == ["580"]
    assert "beat_root" in D.load_dataset_dir(tmp_path / "ds").column_names
    code = main(["build-dataset", str(POP909_DIR), str(tmp_path / "ds2"), "--structure", str(tmp_path / "nowhere")])
    assert code == 2 and "structure annotation folder not found" in capsys.readouterr().err
