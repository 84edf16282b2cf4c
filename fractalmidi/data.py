"""Hugging Face datasets from folders of MIDI files, training windows and augmentation.

One row per song, notes as flat integer lists on the grid of `Piece` (not dense piano rolls,
which are ~100x larger and made on the fly by the training transform). The row schema
(`FEATURES`, fixed so that every build has the same column types):

    song_id           string     the file's path relative to the folder, without suffix
                                 ("001" for POP909's 001/001.mid; see `song_id_for`)
    source            string     the MIDI file, relative to the folder ("001/001.mid")
    beat_file         string     the beat annotation used, relative to the folder ("" if none)
    used_beats        bool       whether the grid came from a beat file (else from MIDI ticks)
    split             string     "train" or "validation" (`split_of`: a hash of song_id)
    steps_per_beat    int32      grid steps per quarter note
    pitch_low         int32      the lowest pitch of the pitch range (21 = A0 by default)
    pitch_high        int32      the highest (108 = C8)
    pitch             [uint8]    (N,) one entry per note, sorted by (start, pitch)
    start             [int32]    (N,) onset step
    end               [int32]    (N,) end step, exclusive
    velocity          [uint8]    (N,) 1-127
    bar_starts        [int32]    (B+1,) first step of each bar, then the total length
    ts_numerator      [int32]    (B,) time signature of each bar
    ts_denominator    [int32]    (B,)
    tempo_steps       [int32]    (K,) step of each tempo event (the first is 0)
    tempo_bpm         [float64]  (K,) quarter notes per minute from that step on
    bar_tempo         [float32]  (B,) structure: each bar's mean tempo in BPM
    bar_density       [float32]  (B,) structure: onsets per step in each bar
    n_notes, n_bars, n_steps  int32
    duration_seconds  float64
    read_report       string     JSON: what reading did to the notes (source/kept counts,
                                 dropped and changed counts by reason, warnings)

With `build_dataset(..., structure_dir=DIR)` (POP909's structure annotations, read and aligned
by `fractalmidi.structure.align_song`) each row also has the columns of `STRUCTURE_FEATURES`
(see `structure_columns`); without it they are absent and the rows are exactly the above.

`row_to_piece(piece_to_row(piece, ...))` gives back an identical `Piece` (bar_tempo and
bar_density are derived from it, stored for filtering and statistics).

Functions, in the order of the data flow:
- `find_midi_files(midi_dir)`: every .mid / .midi under a folder with its beat file, if any.
- `piece_to_row` / `row_to_piece`: a `Piece` <-> one row.
- `build_dataset(midi_dir, out_dir)`: read every file (bad ones skipped and listed in the
  `BuildReport`), add the split, optionally save atomically with `build_report.json`.
- `load_dataset_dir(path_or_hub_id, split)` and `split_dataset(ds)`: get it back.
- `window_starts`, `crop`, `random_crop`: bar-aligned training windows.
- `augment_transpose`: a random pitch shift that keeps every note in the pitch range.
- `make_train_transform(num_bars, max_shift, seed)`: for `ds.with_transform`: random
  window + transposition, as dense arrays (piano roll, bar position and index per step,
  tempo and density per bar); `collate` pads such examples into a batch.

All randomness goes through an explicit `numpy.random.Generator`; nothing touches global state.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import numpy as np
from tqdm.auto import tqdm

from .errors import InputError
from .midi_io import MIDI_SUFFIXES, ReadReport, find_midi_files, read_midi
from .piece import PIANO_RANGE, Piece
from . import structure as S

REPORT_FILE = "build_report.json"
SPLITS = ("train", "validation")

FEATURES = datasets.Features(
    {
        # metadata
        "song_id": datasets.Value("string"),
        "source": datasets.Value("string"),
        "beat_file": datasets.Value("string"),
        "used_beats": datasets.Value("bool"),
        "split": datasets.Value("string"),
        # grid
        "steps_per_beat": datasets.Value("int32"),
        "pitch_low": datasets.Value("int32"),
        "pitch_high": datasets.Value("int32"),
        # notes, one entry per note
        "pitch": datasets.List(datasets.Value("uint8")),
        "start": datasets.List(datasets.Value("int32")),
        "end": datasets.List(datasets.Value("int32")),
        "velocity": datasets.List(datasets.Value("uint8")),
        # bars and tempo
        "bar_starts": datasets.List(datasets.Value("int32")),
        "ts_numerator": datasets.List(datasets.Value("int32")),
        "ts_denominator": datasets.List(datasets.Value("int32")),
        "tempo_steps": datasets.List(datasets.Value("int32")),
        "tempo_bpm": datasets.List(datasets.Value("float64")),
        # structure, one value per bar
        "bar_tempo": datasets.List(datasets.Value("float32")),
        "bar_density": datasets.List(datasets.Value("float32")),
        # sizes
        "n_notes": datasets.Value("int32"),
        "n_bars": datasets.Value("int32"),
        "n_steps": datasets.Value("int32"),
        "duration_seconds": datasets.Value("float64"),
        "read_report": datasets.Value("string"),
    }
)

# POP909 structure annotations aligned with the row's bars and beats (`structure_columns`);
# only in datasets built with `structure_dir`. Masks are False where a level is undefined.
STRUCTURE_FEATURES = datasets.Features(
    {
        # per song
        "structure_status": datasets.Value("string"),  # aligned / not_aligned / no_annotation / error
        "structure_note": datasets.Value("string"),  # why the structure is masked ("" when aligned)
        "align_shift_beats": datasets.Value("int32"),  # annotation step s = piece step s + 4 * shift
        "align_match": datasets.Value("float32"),  # share of annotated onsets on a MELODY note
        "aligned_well": datasets.Value("bool"),  # match >= structure.GOOD_MATCH (0.8)
        "align_on_bar_line": datasets.Value("bool"),  # the shift falls on a downbeat of the beat file
        "form": datasets.Value("string"),  # annotator 1's form string ("i4A4B8o3"), "" if none
        "key": datasets.Value("string"),  # the song's (first) key, "Gb:maj"; "" if none
        "keys": datasets.List(datasets.Value("string")),  # every key line (later keys: modulations)
        "key_tonic": datasets.Value("int8"),  # pitch class 0-11, -1 if none
        "key_mode": datasets.Value("int8"),  # 0 major, 1 minor, -1 if none
        # per bar of the row (B,)
        "bar_label_mask": datasets.List(datasets.Value("bool")),  # phrase label defined
        "bar_on_grid": datasets.List(datasets.Value("bool")),  # bar starts on an annotation bar line
        "bar_letter": datasets.List(datasets.Value("string")),  # phrase letter ("i", "A", "b" ...), "" masked
        "bar_phrase": datasets.List(datasets.Value("int16")),  # phrase index, -1 masked
        "bar_phrase_position": datasets.List(datasets.Value("int16")),  # bar in its phrase, 0-based; -1
        "bar_phrase_length": datasets.List(datasets.Value("int16")),  # bars of its phrase; 0 masked
        "bar_melodic": datasets.List(datasets.Value("bool")),  # upper-case letter (melodic phrase)
        # per beat of the row (n_steps // steps_per_beat,)
        "beat_chord_mask": datasets.List(datasets.Value("bool")),  # a chord annotated ("N" counts)
        "beat_root": datasets.List(datasets.Value("int8")),  # pitch class, -1 for N or masked
        "beat_quality": datasets.List(datasets.Value("int8")),  # index into structure.QUALITIES, -1
        "beat_bass": datasets.List(datasets.Value("int8")),  # pitch class, -1 for N or masked
        # the annotated melody on the row's steps, sorted by start (empty unless aligned well)
        "melody_pitch": datasets.List(datasets.Value("uint8")),
        "melody_start": datasets.List(datasets.Value("int32")),
        "melody_end": datasets.List(datasets.Value("int32")),  # exclusive, cut at the piece's end
    }
)
STRUCTURE_STATUSES = ("aligned", "not_aligned", "no_annotation", "error")


# ----------------------------------------------------------------------------- finding files
def song_id_for(relative_path) -> str:
    """A song's id: its path relative to the folder, without suffix, in POSIX form; for
    POP909's `NNN/NNN.mid` (a file named after its folder) just the folder, `NNN`.
    It depends on the file alone, so ids (and the split) stay put when files are added."""
    rel = Path(relative_path)
    if rel.parent != Path(".") and rel.stem == rel.parent.name:
        return rel.parent.as_posix()
    return rel.with_suffix("").as_posix()


def split_of(song_id: str, validation_fraction: float = 0.05) -> str:
    """"train" or "validation" for a song, from a hash of its id: deterministic, the same on
    every machine, and unaffected by other songs being added or removed."""
    digest = hashlib.sha256(song_id.encode("utf-8")).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64  # uniform in [0, 1)
    return "validation" if u < validation_fraction else "train"


# ----------------------------------------------------------------------------- rows
def piece_to_row(
    piece: Piece,
    song_id: str,
    source: str,
    beat_file: str | None = None,
    report: ReadReport | None = None,
    split: str = "train",
) -> dict:
    """One dataset row (see the module docstring for the columns) of a `Piece`.

    `source` / `beat_file`: the MIDI and beat file paths to record (relative to the dataset
    folder); `report`: the `ReadReport` of `read_midi`, summarised as JSON.
    """
    n = piece.notes  # (N, 4): pitch, start, end, velocity
    structure = piece.structure()
    summary = {}
    if report is not None:
        summary = {
            "source_notes": report.source_notes,
            "kept_notes": report.kept_notes,
            "dropped": report.dropped,
            "changed": report.changed,
            "first_beat_step": report.first_beat_step,
            "warnings": report.warnings,
        }
    return {
        "song_id": song_id,
        "source": source,
        "beat_file": beat_file or "",
        "used_beats": bool(beat_file),
        "split": split,
        "steps_per_beat": piece.steps_per_beat,
        "pitch_low": piece.pitch_range[0],
        "pitch_high": piece.pitch_range[1],
        "pitch": n[:, 0].tolist(),
        "start": n[:, 1].tolist(),
        "end": n[:, 2].tolist(),
        "velocity": n[:, 3].tolist(),
        "bar_starts": piece.bar_starts.tolist(),
        "ts_numerator": piece.time_signatures[:, 0].tolist(),
        "ts_denominator": piece.time_signatures[:, 1].tolist(),
        "tempo_steps": piece.tempo_steps.tolist(),
        "tempo_bpm": piece.tempo_bpm.tolist(),
        "bar_tempo": structure["tempo"].tolist(),
        "bar_density": structure["density"].tolist(),
        "n_notes": len(n),
        "n_bars": piece.num_bars,
        "n_steps": piece.num_steps,
        "duration_seconds": piece.duration_seconds,
        "read_report": json.dumps(summary, sort_keys=True),
    }


def row_to_piece(row: dict) -> Piece:
    """The `Piece` of a row (a dict with at least the note, bar, tempo and grid columns)."""
    notes = np.stack(
        [np.asarray(row[k], dtype=np.int64).reshape(-1) for k in ("pitch", "start", "end", "velocity")],
        axis=1,
    )  # (N, 4)
    return Piece(
        notes=notes,
        bar_starts=row["bar_starts"],
        time_signatures=np.stack([np.asarray(row["ts_numerator"]), np.asarray(row["ts_denominator"])], axis=1),
        tempo_steps=row["tempo_steps"],
        tempo_bpm=row["tempo_bpm"],
        steps_per_beat=int(row["steps_per_beat"]),
        pitch_range=(int(row["pitch_low"]), int(row["pitch_high"])),
    )


# ----------------------------------------------------------------------------- structure
def _parse_key(key: str) -> tuple[int, int]:
    """"Gb:maj" -> (tonic pitch class, mode 0 major / 1 minor); (-1, -1) for none."""
    if not key or ":" not in key:
        return -1, -1
    tonic, mode = key.split(":", 1)
    try:
        return S.parse_pitch_class(tonic, "key"), {"maj": 0, "min": 1}.get(mode, -1)
    except InputError:
        return -1, -1


def structure_columns(piece: Piece, alignment=None, status: str = "no_annotation", note: str = "") -> dict:
    """The `STRUCTURE_FEATURES` columns of a row, from an `Alignment` of the same piece
    (`structure.align_song`), or all masked (alignment None, with `status` and `note` saying why).

    Bar and beat columns have one entry per bar / beat of `piece`: the alignment's bars must be
    the piece's bars (checked by `build_dataset`). A song that does not align well keeps its
    song-level annotations (form string, key: they do not depend on the shift), while its bar
    labels, chords and melody are masked, as `align_song` does. The melody keeps the notes that
    start inside the piece (cut at its end)."""
    nb, nbeat = piece.num_bars, piece.num_steps // piece.steps_per_beat
    cols = {
        "structure_status": status, "structure_note": note, "align_shift_beats": 0, "align_match": 0.0,
        "aligned_well": False, "align_on_bar_line": False, "form": "", "key": "", "keys": [],
        "key_tonic": -1, "key_mode": -1,
        "bar_label_mask": [False] * nb, "bar_on_grid": [False] * nb, "bar_letter": [""] * nb,
        "bar_phrase": [-1] * nb, "bar_phrase_position": [-1] * nb, "bar_phrase_length": [0] * nb,
        "bar_melodic": [False] * nb,
        "beat_chord_mask": [False] * nbeat, "beat_root": [-1] * nbeat, "beat_quality": [-1] * nbeat,
        "beat_bass": [-1] * nbeat,
        "melody_pitch": [], "melody_start": [], "melody_end": [],
    }
    if alignment is None:
        return cols
    a = alignment
    if len(a.bar_mask) != nb or len(a.beat_root) != nbeat:
        raise InputError(f"song {a.song}: the alignment has {len(a.bar_mask)} bars and {len(a.beat_root)} beats, "
                         f"the piece {nb} and {nbeat}")
    tonic, mode = _parse_key(a.key)
    cols.update(
        structure_status="aligned" if a.aligned_well else "not_aligned",
        structure_note="" if a.aligned_well else f"match {a.match:.3f} < {S.GOOD_MATCH}: labels, chords and melody masked",
        align_shift_beats=int(a.shift_beats), align_match=float(a.match), aligned_well=bool(a.aligned_well),
        align_on_bar_line=bool(a.on_bar_line), form=a.form, key=a.key, keys=list(a.keys),
        key_tonic=tonic, key_mode=mode,
        bar_label_mask=a.bar_mask.tolist(), bar_on_grid=(a.bar_on_grid & a.bar_mask).tolist(),
        bar_letter=list(a.bar_letter), bar_phrase=a.bar_phrase.tolist(),
        bar_phrase_position=a.bar_position.tolist(), bar_phrase_length=a.bar_phrase_length.tolist(),
        bar_melodic=a.bar_melodic.tolist(),
        beat_chord_mask=a.beat_chord_mask.tolist(), beat_root=a.beat_root.tolist(),
        beat_quality=a.beat_quality.tolist(), beat_bass=a.beat_bass.tolist(),
    )
    if a.aligned_well:
        mel = np.asarray(a.melody, np.int64).reshape(-1, 4)
        mel = mel[(mel[:, 1] >= 0) & (mel[:, 1] < piece.num_steps)]
        mel = mel[np.lexsort((mel[:, 0], mel[:, 1]))]
        cols.update(melody_pitch=mel[:, 0].tolist(), melody_start=mel[:, 1].tolist(),
                    melody_end=np.minimum(mel[:, 2], piece.num_steps).tolist())
    return cols


def _read_structure(path: Path, beats, piece: Piece, song_id: str, structure_dir: Path) -> dict:
    """The structure columns of one song: its annotation folder `structure_dir/song_id` read
    and aligned by `structure.align_song` on the same beat file, checked to give the piece's
    own bars. Anything that goes wrong masks the song's structure and says why (never raises)."""
    song_dir = structure_dir / song_id
    if not song_dir.is_dir():
        return structure_columns(piece, None, "no_annotation", f"no folder {song_id} in {structure_dir}")
    if piece.steps_per_beat != S.STEPS_PER_BEAT:
        return structure_columns(piece, None, "error", f"the annotations need {S.STEPS_PER_BEAT} steps per beat, "
                                                       f"the dataset has {piece.steps_per_beat}")
    try:
        alignment = S.align_song(path, song_dir, beats=beats)
        if not np.array_equal(alignment.bar_starts, piece.bar_starts):
            return structure_columns(piece, None, "error", "the aligned piece's bars differ from the row's "
                                                           f"({len(alignment.bar_starts) - 1} vs {piece.num_bars} bars)")
        return structure_columns(piece, alignment)
    except InputError as e:
        return structure_columns(piece, None, "error", str(e))
    except Exception as e:  # unforeseen: keep the song's notes, say so
        return structure_columns(piece, None, "error", f"unexpected {type(e).__name__} while aligning: {e}")


def structure_summary(rows: list[dict], structure_dir) -> dict:
    """The alignment part of the build report, from rows with the structure columns: songs
    aligned well, those that are not (with match and shift), those without annotations or
    whose annotations failed (with the reason), and coverage of bars, beats and melody."""
    by = {s: [r for r in rows if r["structure_status"] == s] for s in STRUCTURE_STATUSES}
    annotated = by["aligned"] + by["not_aligned"]
    bars = sum(r["n_bars"] for r in rows)
    beats = sum(len(r["beat_chord_mask"]) for r in rows)
    labelled = sum(sum(r["bar_label_mask"]) for r in rows)
    chord_beats = sum(sum(r["beat_chord_mask"]) for r in rows)
    return {
        "structure_dir": str(structure_dir),
        "songs": len(rows),
        "annotated": len(annotated),  # read and aligned, well or not
        "aligned_well": len(by["aligned"]),
        "aligned_well_share_of_annotated": round(len(by["aligned"]) / len(annotated), 4) if annotated else 0.0,
        "good_match": S.GOOD_MATCH,
        "mean_match": round(float(np.mean([r["align_match"] for r in annotated])), 4) if annotated else 0.0,
        "shift_on_bar_line": sum(r["align_on_bar_line"] for r in by["aligned"]),
        "not_aligned_well": [{"song_id": r["song_id"], "match": round(float(r["align_match"]), 4),
                              "shift_beats": r["align_shift_beats"]} for r in by["not_aligned"]],
        "no_annotation": [r["song_id"] for r in by["no_annotation"]],
        "errors": [{"song_id": r["song_id"], "reason": r["structure_note"]} for r in by["error"]],
        "coverage": {
            "bars": bars, "labelled_bars": labelled, "labelled_share": round(labelled / bars, 4) if bars else 0.0,
            "beats": beats, "chord_beats": chord_beats,
            "chord_share": round(chord_beats / beats, 4) if beats else 0.0,
            "melody_notes": sum(len(r["melody_pitch"]) for r in rows),
        },
    }


# ----------------------------------------------------------------------------- building
@dataclass
class BuildReport:
    """What `build_dataset` did: counts, the files it skipped and why, time and size."""

    midi_dir: str
    out_dir: str | None = None
    files: int = 0  # MIDI files found
    songs: int = 0  # rows in the dataset
    skipped: list[dict] = field(default_factory=list)  # {"source": relative path, "reason": message}
    with_beat_file: int = 0  # songs read on a beat file's grid
    notes: int = 0
    bars: int = 0
    hours: float = 0.0  # total duration of the songs
    splits: dict[str, int] = field(default_factory=dict)  # split -> songs
    steps_per_beat: int = 4
    validation_fraction: float = 0.05
    seconds: float = 0.0  # time taken, reading and saving
    size_bytes: int = 0  # of the saved dataset (0 when not saved)
    structure: dict | None = None  # `structure_summary`, when built with structure_dir

    def as_dict(self) -> dict:
        d = asdict(self)
        if d["structure"] is None:  # a build without annotations reports as before
            del d["structure"]
        return d


def _read_one(job: tuple) -> tuple[dict | None, str | None]:
    """Read one file into a row, or return the reason it cannot be used (worker function)."""
    path, beats, midi_dir, steps_per_beat, pitch_range, validation_fraction, structure_dir = job
    rel = path.relative_to(midi_dir).as_posix()
    try:
        piece, report = read_midi(path, beats=beats, steps_per_beat=steps_per_beat, pitch_range=pitch_range)
    except InputError as e:
        return None, str(e)
    except Exception as e:  # a file that breaks the reader in an unforeseen way: keep going, say so
        return None, f"{path}: unexpected {type(e).__name__} while reading: {e}"
    song_id = song_id_for(rel)
    row = piece_to_row(
        piece,
        song_id=song_id,
        source=rel,
        beat_file=beats.relative_to(midi_dir).as_posix() if beats is not None else None,
        report=report,
        split=split_of(song_id, validation_fraction),
    )
    if structure_dir is not None:
        row.update(_read_structure(path, beats, piece, song_id, structure_dir))
    return row, None


def build_dataset(
    midi_dir,
    out_dir=None,
    steps_per_beat: int = 4,
    use_beats: bool = True,
    num_proc: int = 1,
    progress: bool = True,
    validation_fraction: float = 0.05,
    pitch_range: tuple[int, int] = PIANO_RANGE,
    structure_dir=None,
) -> tuple[datasets.Dataset, BuildReport]:
    """Read every MIDI file under `midi_dir` into a `datasets.Dataset`, one row per song.

    Args:
        midi_dir: the folder, searched recursively (see `find_midi_files`).
        out_dir: if given, the dataset is saved there (`save_to_disk`) with `build_report.json`,
            atomically: written to a temporary folder beside it, then renamed into place. An
            existing `out_dir` is replaced only if it is empty or a previous build.
        steps_per_beat: grid steps per quarter note.
        use_beats: read on beat files where there are some (else on the MIDI ticks).
        num_proc: worker processes reading files.
        progress: show a tqdm progress bar.
        validation_fraction: share of songs (by hash of song_id) in the validation split.
        pitch_range: pitches kept (others are dropped by `read_midi` and counted in read_report).
        structure_dir: POP909's structure annotations (`NNN/` folders, see `fractalmidi.structure`):
            each row gains the `STRUCTURE_FEATURES` columns, the song's annotations aligned with
            its own bars and beats (`structure_columns`; masked where a song has no folder, does
            not align well, or its annotations cannot be read), and the report the alignment
            summary (`structure_summary`). None: no such columns, rows as without it.
    Returns the dataset (rows in file order) and a `BuildReport`. Files that cannot be read
    are skipped and listed in the report with the reason; every other file gives a row.
    """
    t0 = time.perf_counter()
    midi_dir = Path(midi_dir)
    if not 0.0 <= validation_fraction <= 1.0:
        raise InputError(f"validation_fraction must lie in 0-1, got {validation_fraction}")
    if structure_dir is not None:
        structure_dir = Path(structure_dir)
        if not structure_dir.is_dir():
            raise InputError(f"{structure_dir}: structure annotation folder not found")
    files = find_midi_files(midi_dir)
    report = BuildReport(
        midi_dir=str(midi_dir), out_dir=str(out_dir) if out_dir is not None else None, files=len(files),
        steps_per_beat=steps_per_beat, validation_fraction=validation_fraction,
    )
    jobs = [
        (path, beats if use_beats else None, midi_dir, steps_per_beat, tuple(pitch_range), validation_fraction,
         structure_dir)
        for path, beats in files
    ]

    # read every file (in worker processes if num_proc > 1), results in file order
    bar = dict(total=len(jobs), desc="reading MIDI", unit="file", disable=not progress)
    if num_proc > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=num_proc) as pool:
            chunk = max(1, len(jobs) // (num_proc * 16))
            results = list(tqdm(pool.map(_read_one, jobs, chunksize=chunk), **bar))
    else:
        results = [_read_one(job) for job in tqdm(jobs, **bar)]

    rows = []
    for (path, _), (row, reason) in zip(files, results):
        if row is None:
            report.skipped.append({"source": path.relative_to(midi_dir).as_posix(), "reason": reason})
        else:
            rows.append(row)
    _make_song_ids_unique(rows, validation_fraction)

    features = FEATURES if structure_dir is None else datasets.Features({**FEATURES, **STRUCTURE_FEATURES})
    ds = datasets.Dataset.from_dict(
        {name: [r[name] for r in rows] for name in features}, features=features
    )
    report.songs = len(rows)
    report.with_beat_file = sum(r["used_beats"] for r in rows)
    report.notes = sum(r["n_notes"] for r in rows)
    report.bars = sum(r["n_bars"] for r in rows)
    report.hours = sum(r["duration_seconds"] for r in rows) / 3600
    report.splits = {s: sum(r["split"] == s for r in rows) for s in SPLITS}
    if structure_dir is not None:
        report.structure = structure_summary(rows, structure_dir)

    if out_dir is not None:
        bars_were_on = not datasets.are_progress_bars_disabled()
        if not progress:
            datasets.disable_progress_bars()  # save_to_disk's own bar
        try:
            report.size_bytes = _save_atomically(ds, Path(out_dir), report, t0)
        finally:
            if bars_were_on:
                datasets.enable_progress_bars()
        ds = datasets.load_from_disk(str(out_dir))  # memory-mapped, like a later load
    report.seconds = time.perf_counter() - t0
    return ds, report


def _make_song_ids_unique(rows: list[dict], validation_fraction: float) -> None:
    """Two files with one id ("a.mid" and "a.midi", or "a/a.mid" and "a.mid"): those songs
    take their full relative path (suffix included) as id, and the split that goes with it."""
    count: dict[str, int] = {}
    for r in rows:
        count[r["song_id"]] = count.get(r["song_id"], 0) + 1
    for r in rows:
        if count[r["song_id"]] > 1:
            r["song_id"] = r["source"]
            r["split"] = split_of(r["source"], validation_fraction)


def _dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _is_previous_build(path: Path) -> bool:
    return path.is_dir() and (
        not any(path.iterdir()) or (path / REPORT_FILE).is_file() or (path / "dataset_info.json").is_file()
    )


def _save_atomically(ds: datasets.Dataset, out_dir: Path, report: BuildReport, t0: float) -> int:
    """save_to_disk into a temporary folder beside `out_dir`, add build_report.json, then
    rename it into place (an older build there is moved aside first, then deleted).
    Returns the dataset's size on disk in bytes."""
    if out_dir.exists() and not _is_previous_build(out_dir):
        raise InputError(f"{out_dir}: exists and is not a dataset built here; refusing to replace it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir()  # (not mkdtemp: its 0700 mode would become the dataset folder's)
    old = None
    try:
        ds.save_to_disk(str(tmp))
        size = _dir_size(tmp)
        report.size_bytes = size
        report.seconds = time.perf_counter() - t0
        (tmp / REPORT_FILE).write_text(json.dumps(report.as_dict(), indent=1) + "\n")
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
            os.replace(out_dir, old / "previous")
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and (old / "previous").exists() and not out_dir.exists():
            os.replace(old / "previous", out_dir)  # put the previous build back
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return size


# ----------------------------------------------------------------------------- loading
def _select_split(ds: datasets.Dataset, split: str) -> datasets.Dataset:
    """The rows of one split (an index mapping: nothing is copied or written to disk)."""
    if split not in SPLITS:
        raise InputError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    return ds.select([i for i, s in enumerate(ds["split"]) if s == split])


def split_dataset(ds: datasets.Dataset) -> datasets.DatasetDict:
    """A DatasetDict with "train" and "validation", by the `split` column."""
    return datasets.DatasetDict({s: _select_split(ds, s) for s in SPLITS})


def load_dataset_dir(path_or_hub_id, split: str | None = None) -> datasets.Dataset:
    """A dataset built by `build_dataset`: from a folder (`load_from_disk`) or, if no such
    folder exists, from the Hugging Face Hub (`datasets.load_dataset`). `split`: None for
    every row, or "train" / "validation". A DatasetDict (as `split_dataset` makes, or as a
    Hub repo with split files holds) is handled too."""
    path = Path(path_or_hub_id)
    if path.exists():
        if not path.is_dir():
            raise InputError(f"{path}: not a dataset folder")
        loaded = datasets.load_from_disk(str(path))
    else:
        loaded = datasets.load_dataset(str(path_or_hub_id))
    if isinstance(loaded, datasets.DatasetDict):
        if split is not None and split in loaded:
            return loaded[split]
        loaded = datasets.concatenate_datasets(list(loaded.values()))
    missing = [name for name in FEATURES if name not in loaded.column_names]
    if missing:
        raise InputError(f"{path_or_hub_id}: not a FractalMIDI dataset (columns missing: {', '.join(missing)})")
    return loaded if split is None else _select_split(loaded, split)


# ----------------------------------------------------------------------------- windows
def _num_bars(piece_or_row) -> int:
    if isinstance(piece_or_row, Piece):
        return piece_or_row.num_bars
    return len(piece_or_row["bar_starts"]) - 1


def window_starts(piece_or_row, num_bars: int, hop_bars: int | None = None) -> list[int]:
    """First bars (0-based) of bar-aligned windows of `num_bars` bars, every `hop_bars` bars
    (default: `num_bars`, no overlap).

    Every window is `num_bars` long and together they cover every bar: when the hop does not
    land on the end, one last window ends at the last bar. A piece shorter than `num_bars`
    gives one window, [0], which `crop` returns shorter.
    """
    if num_bars < 1 or (hop_bars is not None and hop_bars < 1):
        raise InputError(f"num_bars and hop_bars must be >= 1, got {num_bars} and {hop_bars}")
    hop = num_bars if hop_bars is None else hop_bars
    last = _num_bars(piece_or_row) - num_bars
    if last <= 0:
        return [0]
    starts = list(range(0, last + 1, hop))
    if starts[-1] != last:
        starts.append(last)
    return starts


def crop(piece: Piece, first_bar: int, num_bars: int) -> Piece:
    """Bars first_bar .. first_bar + num_bars - 1 as a new piece (see `Piece.crop_bars`: notes
    starting before the window are left out, notes running past it are cut at its end).

    A window that runs past the last bar is *shorter*, not padded: padding would invent bars
    (a time signature, a tempo) that the song does not have. `collate` pads batches instead.
    """
    if not 0 <= first_bar < piece.num_bars or num_bars < 1:
        raise InputError(f"window of {num_bars} bars from bar {first_bar + 1}: the piece has bars 1-{piece.num_bars}")
    return piece.crop_bars(first_bar, min(first_bar + num_bars, piece.num_bars))


def random_crop(piece_or_row, num_bars: int, generator: np.random.Generator) -> tuple[Piece, int]:
    """A window of `num_bars` bars starting at a bar drawn uniformly from every start that
    fits (bar 0 when the piece is shorter). Returns (window, first bar)."""
    piece = piece_or_row if isinstance(piece_or_row, Piece) else row_to_piece(piece_or_row)
    first = int(generator.integers(0, max(piece.num_bars - num_bars, 0) + 1))
    return crop(piece, first, num_bars), first


def augment_transpose(piece: Piece, max_shift: int = 5, *, generator: np.random.Generator) -> tuple[Piece, int]:
    """Shift every pitch by a number of semitones drawn uniformly from
    [-max_shift, max_shift] ∩ `piece.transpose_range()`, so no note leaves the pitch range.
    Returns (shifted piece, shift)."""
    lo, hi = piece.transpose_range()  # lo <= 0 <= hi: the notes are inside the range
    lo, hi = max(lo, -max_shift), min(hi, max_shift)
    shift = int(generator.integers(lo, hi + 1))
    shifted, lost = piece.transpose(shift)
    assert lost == 0, "the shift was chosen inside the piece's transpose range"
    return shifted, shift


# ----------------------------------------------------------------------------- dense examples
def dense_example(piece: Piece) -> dict[str, np.ndarray]:
    """The arrays a model takes, for one piece of T steps and B bars:
    roll (3, T, P) uint8 (onset, sustain, velocity; see `Piece.to_roll`),
    bar_position (T,) int64 (step within its bar, 0 .. bar length - 1),
    bar_index (T,) int64 (the bar of each step, 0 .. B - 1),
    bar_tempo (B,) float32 (BPM), bar_density (B,) float32 (onsets per step),
    time_signatures (B, 2) int64 (numerator, denominator)."""
    steps = np.arange(piece.num_steps)
    bar_index = piece.bar_of_step(steps)  # (T,)
    structure = piece.structure()
    return {
        "roll": piece.to_roll(),
        "bar_position": steps - piece.bar_starts[bar_index],
        "bar_index": bar_index,
        "bar_tempo": structure["tempo"].astype(np.float32),
        "bar_density": structure["density"].astype(np.float32),
        "time_signatures": piece.time_signatures.copy(),
    }


def melody_steps(row: dict, first_bar: int, num_steps: int, shift: int = 0) -> np.ndarray:
    """The row's annotated melody (`melody_pitch/start/end`) on the window of `num_steps` steps
    from bar `first_bar`, transposed by `shift`, one value per step (T,) int16: 0 rest, 1 hold,
    2 + p the onset of MIDI pitch p; all -1 (unknown) when the row has no aligned melody
    (`aligned_well` false, or no structure columns). Notes starting before the window are left
    out and notes running past it cut, as `crop` does with the notes."""
    out = np.full(num_steps, -1, np.int16)
    if not row.get("aligned_well", False) or "melody_pitch" not in row:
        return out
    out[:] = 0
    s0 = int(row["bar_starts"][first_bar])
    pitch = np.asarray(row["melody_pitch"], np.int64) + shift
    start = np.asarray(row["melody_start"], np.int64) - s0
    end = np.minimum(np.asarray(row["melody_end"], np.int64) - s0, num_steps)
    for k in np.argsort(start, kind="stable"):  # a later note cuts an earlier one short
        if 0 <= start[k] < num_steps and 0 <= pitch[k] <= 127:
            out[start[k] + 1 : max(end[k], start[k] + 1)] = 1
            out[start[k]] = 2 + pitch[k]
    return out


NUM_QUALITIES = 14  # len(fractalmidi.structure.QUALITIES)


def chord_beats(row: dict, first_bar: int, num_steps: int, shift: int = 0, steps_per_beat: int = 4) -> np.ndarray:
    """The row's annotated chords (`beat_chord_mask`, `beat_root`, `beat_quality`; one per beat
    of the piece, step // steps_per_beat) on the window of `num_steps` steps from bar
    `first_bar`, one value per window beat (ceil(num_steps / steps_per_beat),) int16: 0 no chord
    (N), 1 + 14 * root + quality (`structure.QUALITIES`) with the root transposed by `shift`
    (mod 12; N stays N), -1 unknown (not annotated, a quality outside the vocabulary, or a row
    without aligned annotations). Window beat j is the piece beat holding its step
    steps_per_beat * j. The bass is not kept (the chord level takes the root as the bass)."""
    nb = -(-num_steps // steps_per_beat)
    out = np.full(nb, -1, np.int16)
    if not row.get("aligned_well", False) or "beat_root" not in row or not len(row["beat_root"]):
        return out
    s0 = int(row["bar_starts"][first_bar])
    mask = np.asarray(row["beat_chord_mask"], bool)
    root = np.asarray(row["beat_root"], np.int64)
    qual = np.asarray(row["beat_quality"], np.int64)
    beat = (s0 + steps_per_beat * np.arange(nb)) // steps_per_beat
    ok = beat < len(mask)
    b = np.where(ok, beat, 0)
    known = ok & mask[b]
    r, q = root[b], qual[b]
    chord = (r >= 0) & (q >= 0)
    out[known & (r < 0)] = 0  # annotated: no chord
    sel = known & chord
    out[sel] = 1 + NUM_QUALITIES * ((r[sel] + shift) % 12) + q[sel]
    return out


def form_window(row: dict, first_bar: int, num_bars: int) -> np.ndarray:
    """The row's phrase labels as the model's per-bar form inputs (`structure.form_features`:
    kind, position in the phrase, bars left, first or later occurrence of its letter) for the
    window of `num_bars` bars from `first_bar`: (num_bars, 4) int64, all 0 (unknown) where the
    song has no aligned labels. The occurrence is counted over the whole song."""
    from .structure import form_features

    out = np.zeros((num_bars, 4), np.int64)
    if "bar_letter" not in row or not any(row["bar_letter"]):
        return out
    feats = form_features(list(row["bar_letter"]), np.asarray(row["bar_phrase"]),
                          np.asarray(row["bar_phrase_position"]), np.asarray(row["bar_phrase_length"]))
    part = feats[first_bar: first_bar + num_bars]
    out[: len(part)] = part
    return out


def key_of(row: dict, shift: int = 0) -> np.ndarray:
    """The row's annotated key transposed by `shift`: (2,) int64 tonic pitch class and mode
    (0 major, 1 minor), both -1 when unknown."""
    tonic, mode = int(row.get("key_tonic", -1)), int(row.get("key_mode", -1))
    if tonic < 0 or mode < 0:
        return np.array([-1, -1], np.int64)
    return np.array([(tonic + shift) % 12, mode], np.int64)


def annotation_targets(row: dict, first_bar: int, num_steps: int, shift: int = 0,
                       num_bars: int | None = None) -> dict[str, np.ndarray]:
    """The targets of the melody and chord levels a row with the structure annotations gives
    for a window (`melody_steps`, `chord_beats`), and, given `num_bars`, the window's form
    inputs (`form_window`) and key (`key_of`); none for a row without them."""
    out = {}
    if "melody_pitch" in row:
        out["melody"] = melody_steps(row, first_bar, num_steps, shift)
    if "beat_root" in row:
        out["chords"] = chord_beats(row, first_bar, num_steps, shift)
    if num_bars is not None and "bar_letter" in row:
        out["form"] = form_window(row, first_bar, num_bars)
        out["key"] = key_of(row, shift)
    return out


class TrainTransform:
    """A `datasets` transform (`ds.with_transform(t)` / `ds.set_transform(t)`): each row becomes
    a random window of `num_bars` bars, transposed by a random shift (`augment_transpose`), as
    the arrays of `dense_example` plus song_id, first_bar and shift.

    With the structure annotations (`STRUCTURE_FEATURES`, a dataset built with `structure_dir`)
    each example also has `melody` (T,): the annotated melody on the window's steps, transposed
    with the notes (`melody_steps`; all -1 where the song has none aligned), and `chords`
    (beats,): the chord of each beat of the window, its root transposed with the notes
    (`chord_beats`), `form` (bars, 4): the bars' places in the form (`form_window`), and `key`
    (2,): the key, its tonic transposed with the notes (`key_of`).

    Randomness comes from `self.generator`, seeded once: the same seed and the same order of
    reads give the same examples. With several DataLoader workers each holds a copy of the
    generator: reseed it per worker (`worker_init_fn`: `t.generator = np.random.default_rng(seed + id)`).
    """

    def __init__(self, num_bars: int, max_shift: int = 5, seed: int = 0):
        self.num_bars = num_bars
        self.max_shift = max_shift
        self.generator = np.random.default_rng(seed)

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        out: dict[str, list] = {}
        for i in range(len(batch["bar_starts"])):
            row = {k: v[i] for k, v in batch.items()}
            window, first = random_crop(row, self.num_bars, self.generator)
            window, shift = augment_transpose(window, self.max_shift, generator=self.generator)
            example = dense_example(window)
            example.update(annotation_targets(row, first, window.num_steps, shift, window.num_bars))
            example.update(song_id=row.get("song_id", ""), first_bar=first, shift=shift)
            for k, v in example.items():
                out.setdefault(k, []).append(v)
        return out


def make_train_transform(num_bars: int, max_shift: int = 5, seed: int = 0) -> TrainTransform:
    """The training transform (see `TrainTransform`): `ds.with_transform(make_train_transform(8, 5, 0))`."""
    return TrainTransform(num_bars, max_shift, seed)


def collate(examples: list[dict]) -> dict[str, np.ndarray]:
    """Stack `dense_example`s (or transform outputs) of different lengths into one batch,
    padded at the end to the longest: roll (N, 3, T, P), bar_position / bar_index (N, T)
    (bar_index is -1 on padding), step_mask (N, T) bool, bar_tempo / bar_density (N, B),
    time_signatures (N, B, 2), bar_mask (N, B) bool; melody (N, T) int16 and chords (N, beats)
    int16 when every example has them (-1 on padding); form (N, B, 4) and key (N, 2) likewise
    (0 / -1 unknown); other keys become lists."""
    n = len(examples)
    T = max(len(e["bar_index"]) for e in examples)
    B = max(len(e["bar_tempo"]) for e in examples)
    P = examples[0]["roll"].shape[2]
    batch = {
        "roll": np.zeros((n, 3, T, P), np.uint8),
        "bar_position": np.zeros((n, T), np.int64),
        "bar_index": np.full((n, T), -1, np.int64),
        "step_mask": np.zeros((n, T), bool),
        "bar_tempo": np.zeros((n, B), np.float32),
        "bar_density": np.zeros((n, B), np.float32),
        "time_signatures": np.zeros((n, B, 2), np.int64),
        "bar_mask": np.zeros((n, B), bool),
    }
    if all("melody" in e for e in examples):  # (N, T) the annotated melody, -1 on padding
        batch["melody"] = np.full((n, T), -1, np.int16)
        for i, e in enumerate(examples):
            batch["melody"][i, : len(e["melody"])] = e["melody"]
    if all("chords" in e for e in examples):  # (N, ceil(T / 4)) the annotated chords, -1 on padding
        batch["chords"] = np.full((n, max(len(e["chords"]) for e in examples)), -1, np.int16)
        for i, e in enumerate(examples):
            batch["chords"][i, : len(e["chords"])] = e["chords"]
    if all("form" in e for e in examples):  # (N, B, 4) the bars' form inputs, 0 (unknown) on padding
        batch["form"] = np.zeros((n, B, 4), np.int64)
        for i, e in enumerate(examples):
            batch["form"][i, : len(e["form"])] = e["form"]
    if all("key" in e for e in examples):  # (N, 2) tonic and mode, -1 unknown
        batch["key"] = np.stack([np.asarray(e["key"], np.int64) for e in examples])
    for i, e in enumerate(examples):
        t, b = len(e["bar_index"]), len(e["bar_tempo"])
        batch["roll"][i, :, :t] = e["roll"]
        batch["bar_position"][i, :t] = e["bar_position"]
        batch["bar_index"][i, :t] = e["bar_index"]
        batch["step_mask"][i, :t] = True
        batch["bar_tempo"][i, :b] = e["bar_tempo"]
        batch["bar_density"][i, :b] = e["bar_density"]
        batch["time_signatures"][i, :b] = e["time_signatures"]
        batch["bar_mask"][i, :b] = True
    for k in examples[0]:
        if k not in batch:
            batch[k] = [e[k] for e in examples]
    return batch
