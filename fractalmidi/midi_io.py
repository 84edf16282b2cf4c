"""MIDI files <-> `Piece` (symusic does the MIDI parsing and writing).

Reading puts every note on the metrical grid of `Piece` (steps per quarter note):
- which beat annotation, if any: `read_midi(path, beats="auto")` (the default) uses the one
  `find_beat_file` finds beside the file, `beats=PATH` that file, `beats=None` none; the
  command line follows the same rule (`resolve_beats`), `--beats FILE` / `--no-beats`.
- with a beat annotation (POP909's `beat_midi.txt`: one line per beat, its time in seconds,
  downbeats flagged), note times in seconds are mapped onto the annotated beats, and bars
  run from downbeat to downbeat (a bar of k beats is k/4). POP909's MIDI ticks are offset
  from its beats, which is why its beat file must be used.
- without one, the file's own ticks per quarter define the grid, its time-signature events
  the bars (4/4 when it has none) and its tempo events the tempo map.
The piece runs from its first bar line to the end of the bar holding the last note end (or
the `end` marker this module writes). With a beat file, step 0 is the first annotated beat,
and beats before the first downbeat form a short pickup bar (3 beats: 3/4), so a note's step
is exactly its annotated beat position times `steps_per_beat`, rounded. Beats are extended
before the first and after the last annotated beat at the first / last beat interval, so no
note is lost at the edges (full bars are added before beat 0 only for notes that precede it;
`ReadReport.first_beat_step` then says where beat 0 went). Note ends are rounded the same
way, and a note is at least one step long.

Writing produces a type-1 MIDI file: one piano track with the notes exactly on the grid, a
tempo event wherever the tempo changes, a time-signature event wherever the bar changes
metre, and an `end` marker at the last bar line, so reading it back gives the same piece.
Files are written to a temporary file beside the target and renamed into place
(`files.atomic_path`), with the mode of any new file (0666 less the umask).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from symusic import KeySignature, Note, Score, TextMeta, TimeSignature, Track, Tempo

from .errors import InputError
from .files import atomic_path
from .piece import MAX_BPM, MIN_BPM, PIANO_RANGE, Piece, bar_length_steps, normalize_notes

MAX_FILE_BYTES = 16 * 1024 * 1024  # no real MIDI file of one piece comes near this
MAX_BARS = 2048  # about an hour of 4/4 at 120 BPM
END_MARKER = "end"  # marker text at the last bar line of the files we write
MIDI_SUFFIXES = (".mid", ".midi")
POP909_BEAT_FILE = "beat_midi.txt"  # one per song folder (POP909 layout)
BEATS_SUFFIX = ".beats.txt"  # <stem>.beats.txt beside any MIDI file
AUTO_BEATS = "auto"  # read_midi's default: the beat file `find_beat_file` finds, if any
MAX_TICKS_PER_QUARTER = 0x7FFF  # a MIDI header's division: 15 bits (the top bit means SMPTE)


@dataclass
class ReadReport:
    """What happened to a file's notes on the way to the grid (printed by `fractalmidi inspect`)."""

    path: str
    grid: str  # "beat file <path>" or "ticks (tpq=N)"
    tracks_used: list[str] = field(default_factory=list)
    source_notes: int = 0  # notes in the tracks that were read
    kept_notes: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> count of notes left out
    changed: dict[str, int] = field(default_factory=dict)  # reason -> count of notes altered
    onset_error_median: float = 0.0  # median distance of onsets from their grid line, in steps
    onsets_within_0_1: float = 1.0  # fraction of onsets within 0.1 step of a grid line
    first_beat_step: int = 0  # the step of annotated beat 0 (> 0 only if notes come before it)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


# ------------------------------------------------------------------------- beat files
def read_beats(path) -> tuple[np.ndarray, np.ndarray]:
    """Read a beat annotation: one line per beat, `seconds [flag ...]`.

    POP909 layout: `seconds  every-2nd-beat  downbeat`: with three or more columns the third
    marks downbeats, with two columns the second does, with one column every fourth beat is
    taken as a downbeat. Returns (times (n,), is_downbeat (n,) bool).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: beat file not found")
    rows, line_no = [], []  # line_no: the file's line of each row (blank lines are skipped)
    for i, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        try:
            rows.append([float(x) for x in parts])
            line_no.append(i)
        except ValueError:
            raise InputError(f"{path}, line {i}: expected numbers (seconds, flags), got {line.strip()[:60]!r}") from None
    if len(rows) < 2:
        raise InputError(f"{path}: a beat file needs at least 2 beats, found {len(rows)}")
    ncol = min(len(r) for r in rows)
    times = np.array([r[0] for r in rows])
    if ncol >= 3:
        down = np.array([r[2] for r in rows]) > 0.5
    elif ncol == 2:
        down = np.array([r[1] for r in rows]) > 0.5
    else:
        down = np.arange(len(rows)) % 4 == 0
    if not np.all(np.isfinite(times)):
        raise InputError(f"{path}: beat times must be finite numbers")
    step = np.diff(times)
    if np.any(step <= 0):
        i = int(np.nonzero(step <= 0)[0][0])
        raise InputError(f"{path}, line {line_no[i + 1]}: beat time {times[i + 1]:g} s does not come after {times[i]:g} s")
    bpm = 60.0 / step
    bad = (bpm < MIN_BPM) | (bpm > MAX_BPM)
    if bad.any():
        i = int(np.nonzero(bad)[0][0])
        raise InputError(
            f"{path}, line {line_no[i]}: beat interval {step[i]:.4f} s is a tempo of {bpm[i]:.1f} BPM, "
            f"outside the allowed range {MIN_BPM:g}-{MAX_BPM:g} BPM"
        )
    if not down.any():
        down[0] = True
    return times, down


def find_beat_file(midi_path, beats_dir=None, midi_files_in_folder: int | None = None) -> Path | None:
    """The beat annotation of a MIDI file, or None. Looked for in this order:
    `<beats_dir>/<stem>.txt` and `<beats_dir>/<stem>/beat_midi.txt` (when `beats_dir` is
    given), `<stem>.beats.txt` beside the file, then `beat_midi.txt` beside it (POP909's
    layout) when the file is the only MIDI file in its folder: a folder-wide beat file cannot
    say which of several songs it belongs to. `midi_files_in_folder` spares counting them."""
    midi_path = Path(midi_path)
    candidates = []
    if beats_dir is not None:
        candidates += [Path(beats_dir) / f"{midi_path.stem}.txt", Path(beats_dir) / midi_path.stem / POP909_BEAT_FILE]
    candidates.append(midi_path.with_name(midi_path.stem + BEATS_SUFFIX))
    found = next((c for c in candidates if c.is_file()), None)
    if found is not None:
        return found
    shared = midi_path.with_name(POP909_BEAT_FILE)
    if not shared.is_file():
        return None
    if midi_files_in_folder is None:
        midi_files_in_folder = sum(1 for f in midi_path.parent.iterdir() if f.suffix.lower() in MIDI_SUFFIXES)
    return shared if midi_files_in_folder == 1 else None


def resolve_beats(midi_path, beats=AUTO_BEATS, beats_dir=None) -> Path | None:
    """The beat file to read `midi_path` with, by the one rule `read_midi` and the command
    line share: `"auto"` the one `find_beat_file(midi_path, beats_dir)` finds (or None),
    None or False none (the file's own ticks), a path that file (`read_beats` checks it)."""
    if beats is None or beats is False:
        return None
    if isinstance(beats, str) and beats == AUTO_BEATS:
        return find_beat_file(midi_path, beats_dir)
    if isinstance(beats, (str, os.PathLike)):
        return Path(beats)
    raise TypeError(f'beats must be "auto", None or a path to a beat file, not {beats!r}')


def find_midi_files(midi_dir, beats_dir=None) -> list[tuple[Path, Path | None]]:
    """Every .mid / .midi file under `midi_dir` (recursive, sorted by path), each paired with
    its beat annotation (see `find_beat_file`) or None."""
    midi_dir = Path(midi_dir)
    if not midi_dir.is_dir():
        raise InputError(f"{midi_dir}: not a folder")
    files = sorted(p for p in midi_dir.rglob("*") if p.suffix.lower() in MIDI_SUFFIXES and p.is_file())
    per_folder: dict[Path, int] = {}
    for p in files:
        per_folder[p.parent] = per_folder.get(p.parent, 0) + 1
    return [(p, find_beat_file(p, beats_dir, per_folder[p.parent])) for p in files]


def _seconds_to_beats(seconds: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Fractional beat index of times in seconds, linear between annotated beats and
    extrapolated at the first / last beat interval outside them."""
    i = np.clip(np.searchsorted(times, seconds, side="right") - 1, 0, len(times) - 2)
    return i + (seconds - times[i]) / (times[i + 1] - times[i])


def _beat_time(index: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Seconds of (possibly extrapolated) integer beat indices."""
    index = np.asarray(index)
    first, last = times[1] - times[0], times[-1] - times[-2]
    inside = np.clip(index, 0, len(times) - 1)
    return np.where(
        index < 0, times[0] + index * first,
        np.where(index > len(times) - 1, times[-1] + (index - (len(times) - 1)) * last, times[inside]),
    )


# ------------------------------------------------------------------------- reading
def _load_score(path: Path, max_bytes: int) -> Score:
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a MIDI file")
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    size = path.stat().st_size
    if size == 0:
        raise InputError(f"{path}: the file is empty")
    if size > max_bytes:
        raise InputError(f"{path}: {size} bytes is larger than the limit of {max_bytes} bytes for a MIDI file")
    with open(path, "rb") as f:
        header = f.read(14)
    if header[:4] != b"MThd":
        raise InputError(f"{path}: not a MIDI file (it does not start with the MThd header)")
    if len(header) == 14 and int.from_bytes(header[4:8], "big") >= 6:
        _check_division(int.from_bytes(header[12:14], "big"), path)
    try:
        score = Score(str(path))
    except Exception as e:  # symusic raises RuntimeError for broken files
        raise InputError(f"{path}: not a readable MIDI file ({e})") from None
    _check_division(score.tpq, path)  # every tick -> step or second divides by it
    return score


def _check_division(division: int, path: Path):
    """The header's time division (16 bits): ticks per quarter note, 1-32767; with the top
    bit set it is SMPTE time (frames per second, ticks per frame), which has no quarter notes."""
    if division & 0x8000:
        fps = 256 - (division >> 8)  # the high byte is minus the frame rate, two's complement
        raise InputError(
            f"{path}: SMPTE time division (0x{division:04X}: {fps} frames per second, {division & 0xFF} "
            f"ticks per frame) is not supported; only ticks per quarter note"
        )
    if division == 0:
        raise InputError(f"{path}: time division (ticks per quarter note) is 0 in the file's header; it must be 1-32767")


def _select_tracks(score: Score, tracks, path: Path) -> list:
    """The tracks to read: all non-drum tracks, or those named / numbered in `tracks`."""
    if tracks is None:
        return [t for t in score.tracks if not t.is_drum]
    chosen = []
    names = [t.name for t in score.tracks]
    for want in tracks:
        if isinstance(want, int) or (isinstance(want, str) and want.isdigit()):
            k = int(want)
            if not 0 <= k < len(score.tracks):
                raise InputError(f"{path}: no track number {k} (the file has tracks 0-{len(score.tracks) - 1}: {names})")
            chosen.append(score.tracks[k])
        else:
            hits = [t for t in score.tracks if t.name.lower() == str(want).lower()]
            if not hits:
                raise InputError(f"{path}: no track named {want!r} (tracks: {names})")
            chosen.extend(hits)
    return chosen


def _check_tempi(score: Score, path: Path):
    for t in score.tempos:
        q = t.qpm
        if not (np.isfinite(q) and MIN_BPM <= q <= MAX_BPM):
            beat = t.time / score.tpq
            raise InputError(
                f"{path}: tempo {q:g} BPM at quarter note {beat:g} is outside the allowed "
                f"range {MIN_BPM:g}-{MAX_BPM:g} BPM"
            )


def _bars_covering(downbeats, bar_len_first, bar_len_last, lo, hi):
    """Bar lines in beats from annotated downbeats: beats before the first downbeat form a
    pickup bar of their own (so annotated beat 0 stays step 0); full bars of the first / last
    length are added before / after until the bars cover the notes, [lo, hi) beats."""
    starts = [0] + list(downbeats) if downbeats[0] > 0 else list(downbeats)
    while starts[0] > lo:
        starts.insert(0, starts[0] - bar_len_first)
    # the last annotated bar keeps its length; more bars of that length follow until hi
    starts.append(starts[-1] + bar_len_last)
    while starts[-1] < hi:
        starts.append(starts[-1] + bar_len_last)
    return np.array(starts)


def read_midi(
    path,
    beats=AUTO_BEATS,
    steps_per_beat: int = 4,
    pitch_range: tuple[int, int] = PIANO_RANGE,
    tracks=None,
    max_bars: int = MAX_BARS,
    max_bytes: int = MAX_FILE_BYTES,
) -> tuple[Piece, ReadReport]:
    """Read a MIDI file onto the grid, all chosen tracks merged: what the model sees.

    `beats`: `"auto"` (the default) for the beat annotation found beside the file, if any
    (`find_beat_file`: `<stem>.beats.txt`, or POP909's `beat_midi.txt` when the file is the
    only MIDI file in its folder); a path for that beat file (see `read_beats`); None for
    none, the file's own ticks. `ReadReport.grid` says which grid was used.
    `tracks`: None for all non-drum tracks, or a list of track names / numbers.
    Returns the `Piece` and a `ReadReport`. Raises `InputError` naming the file and the
    problem for anything unusable. Where two tracks play the same pitch at the same step,
    the merged piece holds one note (see `normalize_notes`); `read_midi_tracks` keeps both.
    """
    pieces, report = _read(path, beats, steps_per_beat, pitch_range, tracks, max_bars, max_bytes, False)
    return pieces[0][1], report


def read_midi_tracks(
    path,
    beats=AUTO_BEATS,
    steps_per_beat: int = 4,
    pitch_range: tuple[int, int] = PIANO_RANGE,
    tracks=None,
    max_bars: int = MAX_BARS,
    max_bytes: int = MAX_FILE_BYTES,
) -> tuple[list[tuple[str, Piece]], ReadReport]:
    """As `read_midi`, but one `Piece` per track (name, piece), all on the same bars and tempo.

    This is what `fractalmidi quantize` writes: a track's notes only collide with notes of
    their own track, so doublings across tracks (a melody and its piano part) survive.
    """
    return _read(path, beats, steps_per_beat, pitch_range, tracks, max_bars, max_bytes, True)


def read_score(
    score: Score,
    steps_per_beat: int = 4,
    pitch_range: tuple[int, int] = PIANO_RANGE,
    tracks=None,
    max_bars: int = MAX_BARS,
    name: str = "score",
) -> tuple[Piece, ReadReport]:
    """As `read_midi(path, beats=None)` for a symusic `Score` already in memory (one that a
    tokenizer decoded, say): all chosen tracks merged onto the grid of the score's own ticks.
    `name` stands for the file in error messages and the report."""
    if not isinstance(score, Score):
        raise InputError(f"{name}: not a symusic Score ({type(score).__name__})")
    _check_division(score.tpq, name)
    pieces, report = _read_score(score, name, None, steps_per_beat, pitch_range, tracks, max_bars, False)
    return pieces[0][1], report


def _read(path, beats, steps_per_beat, pitch_range, tracks, max_bars, max_bytes, per_track):
    path = Path(path)
    score = _load_score(path, max_bytes)
    beats = resolve_beats(path, beats)
    return _read_score(score, path, beats, steps_per_beat, pitch_range, tracks, max_bars, per_track)


def _read_score(score, path, beats, steps_per_beat, pitch_range, tracks, max_bars, per_track):
    """The grid of `score` (read from `path`, or named so): see `read_midi` and `read_score`."""
    _check_tempi(score, path)
    chosen = _select_tracks(score, tracks, path)
    names = [t.name or f"track {i}" for i, t in enumerate(chosen)]
    report = ReadReport(path=str(path), grid="", tracks_used=names)
    drums = sum(t.note_num() for t in score.tracks if t.is_drum) if tracks is None else 0
    if drums:
        report.dropped["drum track"] = drums

    if beats is None:
        starts, ends, pitch, vel, track_id, raw_onsets = _notes_on_tick_grid(score, chosen, steps_per_beat)
    else:
        times, down = read_beats(beats)
        sec_chosen = _select_tracks(score.to("second"), tracks, path)
        starts, ends, pitch, vel, track_id, raw_onsets = _notes_on_beat_grid(sec_chosen, times, steps_per_beat)
    report.source_notes = len(pitch)
    if report.source_notes == 0:
        raise InputError(f"{path}: no notes in the tracks read ({', '.join(names) or 'none'})")

    # ------------------------------------------------------------- bars and tempo
    last_ends = np.maximum(ends, starts + 1)  # every note lasts at least a step
    if beats is None:
        report.grid = f"ticks (tpq={score.tpq})"
        bar_starts, sigs, tempo_steps, tempo_bpm = _tick_bars_and_tempo(
            score, last_ends, steps_per_beat, max_bars, path, report
        )
        offset = 0
    else:
        report.grid = f"beat file {beats}"
        bar_starts, sigs, tempo_steps, tempo_bpm, offset = _beat_bars_and_tempo(
            times, down, starts, last_ends, steps_per_beat, max_bars, path, report
        )
    starts, ends = starts + offset, ends + offset
    report.first_beat_step = offset

    # ------------------------------------------------------------- notes
    lo, hi = pitch_range
    inside = (pitch >= lo) & (pitch <= hi)
    if (~inside).any():
        report.dropped[f"pitch outside {lo}-{hi}"] = int((~inside).sum())
    raw = np.stack([pitch, starts, ends, vel], axis=1)[inside]
    if per_track:  # the notes of each track, in their order: one stable sort, then split
        group = track_id[inside]
        order = np.argsort(group, kind="stable")
        parts = np.split(raw[order], np.searchsorted(group[order], np.arange(1, len(chosen))))
        labels = names
    else:
        parts, labels = [raw], ["+".join(names)]
    counts = {"duplicate": 0, "truncated": 0, "lengthened": 0}
    out = []
    for label, part in zip(labels, parts):
        notes, c = normalize_notes(part)
        counts = {k: counts[k] + c[k] for k in counts}
        out.append((label, notes))
    if counts["duplicate"]:
        where = "in its track" if per_track else "(tracks merged)"
        report.dropped[f"same pitch and onset step as another note {where}"] = counts["duplicate"]
    if counts["truncated"]:
        report.changed["shortened: the next note of its pitch starts before it ends"] = counts["truncated"]
    if counts["lengthened"]:
        report.changed["lengthened to one step: shorter than half a step"] = counts["lengthened"]
    report.kept_notes = sum(len(n) for _, n in out)
    if report.kept_notes == 0:
        raise InputError(f"{path}: no notes left on the grid ({report.dropped})")
    dist = np.abs(raw_onsets - np.round(raw_onsets))
    report.onset_error_median = float(np.median(dist))
    report.onsets_within_0_1 = float(np.mean(dist <= 0.1))
    grid = Piece(out[0][1], bar_starts, sigs, tempo_steps, tempo_bpm, steps_per_beat, pitch_range)
    pieces = [(out[0][0], grid)] + [(name, grid.replace_notes(notes)) for name, notes in out[1:]]
    return pieces, report


def _note_arrays(tracks) -> tuple[np.ndarray, ...]:
    """Onsets, offsets, pitches, velocities and track numbers of all notes of `tracks`."""
    cols = [(k, t.notes.numpy()) for k, t in enumerate(tracks) if t.note_num()]
    if not cols:
        z = np.zeros(0)
        zi = np.zeros(0, np.int64)
        return z, z, zi, zi, zi
    time = np.concatenate([c["time"] for _, c in cols]).astype(np.float64)
    dur = np.concatenate([c["duration"] for _, c in cols]).astype(np.float64)
    pitch = np.concatenate([c["pitch"] for _, c in cols]).astype(np.int64)
    vel = np.concatenate([c["velocity"] for _, c in cols]).astype(np.int64)
    track = np.concatenate([np.full(len(c["time"]), k) for k, c in cols]).astype(np.int64)
    return time, time + dur, pitch, np.clip(vel, 1, 127), track


def _round(x: np.ndarray) -> np.ndarray:
    """Round half up (so 0.5 of a step goes to the later grid line, whatever the parity)."""
    return np.floor(x + 0.5).astype(np.int64)


def _notes_on_tick_grid(score, tracks, spb):
    t0, t1, pitch, vel, track = _note_arrays(tracks)
    on = t0 * spb / score.tpq
    return _round(on), _round(t1 * spb / score.tpq), pitch, vel, track, on


def _notes_on_beat_grid(sec_tracks, times, spb):
    t0, t1, pitch, vel, track = _note_arrays(sec_tracks)
    on = _seconds_to_beats(t0, times) * spb
    off = _seconds_to_beats(t1, times) * spb
    return _round(on), _round(off), pitch, vel, track, on


def _end_step(ends: np.ndarray, marker_steps) -> int:
    return int(max([ends.max(initial=1)] + list(marker_steps)))


def _tick_bars_and_tempo(score, ends, spb, max_bars, path, report):
    tpq = score.tpq
    to_step = lambda tick: int(_round(np.array(tick * spb / tpq)))
    end = _end_step(ends, [to_step(m.time) for m in score.markers if m.text.strip().lower() == END_MARKER])
    if end > max_bars * 16 * spb:
        raise InputError(f"{path}: the notes run for {end / spb:.0f} quarter notes, longer than the limit of {max_bars} bars")
    # time signatures in force, by step (later events at the same step win)
    sig_events = {}
    for ts in score.time_signatures:
        sig_events[to_step(ts.time)] = (int(ts.numerator), int(ts.denominator))
    if 0 not in sig_events:
        first = min(sig_events.items())[1] if sig_events else (4, 4)
        if not sig_events:
            report.warnings.append("no time signature in the file: 4/4 assumed")
        sig_events[0] = first
    changes = sorted(sig_events.items())
    bar_starts, sigs = [0], []
    k = 0
    while bar_starts[-1] < end:
        pos = bar_starts[-1]
        while k + 1 < len(changes) and changes[k + 1][0] <= pos:
            k += 1
        num, den = changes[k][1]
        try:
            length = bar_length_steps(num, den, spb)
        except InputError as e:
            raise InputError(f"{path}, bar {len(sigs) + 1}: {e}") from None
        nxt = changes[k + 1][0] if k + 1 < len(changes) else None
        if nxt is not None and pos < nxt < pos + length:
            # a metre change in the middle of a bar: the bar ends there, as a shorter bar
            length = nxt - pos
            num, den = _signature_for_length(length, spb)
            report.warnings.append(f"time signature change inside bar {len(sigs) + 1}: that bar is read as {num}/{den}")
        sigs.append((num, den))
        bar_starts.append(pos + length)
        if len(sigs) > max_bars:
            raise InputError(f"{path}: more than the limit of {max_bars} bars")
    tempo_events = {0: 120.0}  # MIDI's default until the first tempo event (as symusic reads it)
    if not score.tempos:
        report.warnings.append("no tempo in the file: 120 BPM assumed")
    for t in score.tempos:
        s = to_step(t.time)
        if s < bar_starts[-1]:
            tempo_events[s] = float(t.qpm)
    steps = sorted(tempo_events)
    return np.array(bar_starts), np.array(sigs), np.array(steps), np.array([tempo_events[s] for s in steps])


def _signature_for_length(length: int, spb: int) -> tuple[int, int]:
    """The simplest time signature whose bar is `length` steps (k/4, else k/8, k/16 ...)."""
    den = 4
    while (length * den) % (4 * spb):
        den *= 2
        if den > 64:
            raise InputError(f"a bar of {length} steps has no time signature at {spb} steps per quarter")
    return length * den // (4 * spb), den


def _beat_bars_and_tempo(times, down, starts, ends, spb, max_bars, path, report):
    """Bars from the annotated downbeats; returns bars, signatures, tempo, and the offset in
    steps that moves annotated beat 0 to its place in the piece (after any bars added before)."""
    d = np.nonzero(down)[0]
    first_len = int(d[1] - d[0]) if len(d) > 1 else 4
    last_len = int(d[-1] - d[-2]) if len(d) > 1 else 4
    lo = float(starts.min()) / spb  # in beats from annotated beat 0
    hi = float(ends.max()) / spb
    if hi - lo > max_bars * 16:
        raise InputError(f"{path}: the notes run for {hi - lo:.0f} beats, longer than the limit of {max_bars} bars")
    bar_beats = _bars_covering(d, first_len, last_len, lo, hi)
    # drop whole bars after the one holding the last note end
    last = int(np.searchsorted(bar_beats, hi, side="left"))
    bar_beats = bar_beats[: max(last, 1) + 1]
    if len(bar_beats) - 1 > max_bars:
        raise InputError(f"{path}: {len(bar_beats) - 1} bars is longer than the limit of {max_bars} bars")
    lengths = np.diff(bar_beats)
    sigs = np.stack([lengths, np.full_like(lengths, 4)], axis=1)
    b0 = int(bar_beats[0])
    before = int((starts < 0).sum())
    after = int((ends > (len(times) - 1) * spb).sum())
    if before or after:
        report.warnings.append(
            f"notes outside the annotated beats: {before} start before the first beat, {after} end "
            f"after the last; placed by extending the beats at the first / last beat interval"
        )
    beat_idx = np.arange(b0, int(bar_beats[-1]) + 1)
    bpm = 60.0 / np.diff(_beat_time(beat_idx, times))
    tempo_steps = (beat_idx[:-1] - b0) * spb
    return (bar_beats - b0) * spb, sigs, tempo_steps, bpm, -b0 * spb


# ------------------------------------------------------------------------- writing
def piece_to_score(piece, ticks_per_quarter: int = 480) -> Score:
    """A symusic `Score` (tick time) of a `Piece`, or of a list of (track name, Piece) that
    share their bars and tempo: notes, tempo map, time signatures and the end marker."""
    tracks = [("piano", piece)] if isinstance(piece, Piece) else list(piece)
    if not tracks:
        raise InputError("nothing to write: no tracks")
    grid = tracks[0][1]
    for name, p in tracks[1:]:
        same = (
            p.steps_per_beat == grid.steps_per_beat
            and np.array_equal(p.bar_starts, grid.bar_starts)
            and np.array_equal(p.tempo_steps, grid.tempo_steps)
            and np.array_equal(p.tempo_bpm, grid.tempo_bpm)
        )
        if not same:
            raise InputError(f"track {name!r} does not share the bars and tempo of track {tracks[0][0]!r}")
    spb = grid.steps_per_beat
    if not 1 <= int(ticks_per_quarter) <= MAX_TICKS_PER_QUARTER:
        raise InputError(f"ticks per quarter note must be 1-{MAX_TICKS_PER_QUARTER}, got {ticks_per_quarter}")
    tpq = ticks_per_quarter if ticks_per_quarter % spb == 0 else spb * 120
    if tpq > MAX_TICKS_PER_QUARTER:
        raise InputError(
            f"{spb} steps per quarter note need {tpq} ticks per quarter note, more than MIDI's "
            f"{MAX_TICKS_PER_QUARTER}: write with a ticks_per_quarter that is a multiple of {spb}"
        )
    tps = tpq // spb  # ticks per step
    score = Score(tpq)
    for name, p in tracks:
        track = Track(name, 0, False)
        n = p.notes
        if len(n):
            track.notes = Note.from_numpy(
                time=(n[:, 1] * tps).astype(np.int32),
                duration=((n[:, 2] - n[:, 1]) * tps).astype(np.int32),
                pitch=n[:, 0].astype(np.int8),
                velocity=n[:, 3].astype(np.int8),
            )
        score.tracks.append(track)
    for s, q in zip(grid.tempo_steps, grid.tempo_bpm):
        score.tempos.append(Tempo(int(s) * tps, qpm=float(q)))
    prev = None
    for start, (num, den) in zip(grid.bar_starts[:-1], grid.time_signatures):
        if prev != (num, den):
            score.time_signatures.append(TimeSignature(int(start) * tps, int(num), int(den)))
            prev = (num, den)
    score.markers.append(TextMeta(int(grid.num_steps) * tps, END_MARKER))
    return score


def write_midi(piece, path, ticks_per_quarter: int = 480) -> Path:
    """Write a `Piece` (or a list of (track name, Piece), see `piece_to_score`) as MIDI,
    atomically: to a temporary file beside `path`, then renamed into place, with the mode of
    any new file (0666 less the umask). `ticks_per_quarter`: 1-32767, a multiple of the
    piece's steps per quarter note (else `steps_per_beat * 120` is used)."""
    path = Path(path)
    score = piece_to_score(piece, ticks_per_quarter)
    with atomic_path(path, ".tmp") as tmp:
        score.dump_midi(str(tmp))
    return path


# ------------------------------------------------------------------------- songs
MELODY_TRACK_NAME = "Melody"
PIANO_TRACK_NAME = "Piano"


@dataclass
class SongMidi:
    """What `read_song_midi` finds in a song file: its tracks, chord markers and key."""

    tracks: list[tuple[str, Piece]]  # (track name, Piece), all on the same bars
    chords: list[tuple[int, int, str]]  # (start step, end step, chord name) from the markers
    keys: list[tuple[int, str]]  # (step, key like "G:maj") of each key signature event

    @property
    def key(self) -> str | None:
        return self.keys[0][1] if self.keys else None

    def track(self, name: str) -> Piece | None:
        return next((p for n, p in self.tracks if n.lower() == name.lower()), None)


def _key_events(key) -> list[tuple[int, str]]:
    if key is None:
        return []
    if isinstance(key, str):
        return [(0, key)]
    return [(int(s), str(k)) for s, k in key]


def song_to_score(accompaniment: Piece, melody=None, chords=None, key=None, merge: bool = False,
                  ticks_per_quarter: int = 480) -> Score:
    """The symusic `Score` of a song (see `write_song_midi`)."""
    from .leadsheet import check_melody, chord_spans, key_signature

    if not isinstance(accompaniment, Piece):
        raise InputError(f"the accompaniment must be a Piece, not {type(accompaniment).__name__}")
    tracks = [(PIANO_TRACK_NAME, accompaniment)]
    if melody is not None:
        mel = accompaniment.replace_notes(check_melody(melody, accompaniment))
        if merge:
            merged, _ = normalize_notes(np.concatenate([mel.notes, accompaniment.notes]))
            tracks = [(PIANO_TRACK_NAME, accompaniment.replace_notes(merged))]
        else:
            tracks = [(MELODY_TRACK_NAME, mel)] + tracks
    T = int(accompaniment.bar_starts[-1])
    spans = chord_spans(chords, accompaniment.steps_per_beat, T)
    keys = [(s, k, key_signature(k)) for s, k in _key_events(key)]
    for s, k, _ in keys:
        if not 0 <= s < T:
            raise InputError(f"key {k!r} at step {s} is outside the piece (0-{T - 1})")
    score = piece_to_score(tracks, ticks_per_quarter)
    tps = score.tpq // accompaniment.steps_per_beat
    prev_end = None
    for s, e, name in spans:
        if prev_end is not None and s > prev_end:  # a gap: no chord from the previous end
            score.markers.append(TextMeta(prev_end * tps, "N"))
        score.markers.append(TextMeta(s * tps, name))
        prev_end = e
    if prev_end is not None and prev_end < T:
        score.markers.append(TextMeta(prev_end * tps, "N"))
    for s, _, (sharps, tonality) in keys:
        score.key_signatures.append(KeySignature(s * tps, sharps, tonality))
    return score


def write_song_midi(path, accompaniment: Piece, melody=None, chords=None, key=None, merge: bool = False,
                    ticks_per_quarter: int = 480) -> Path:
    """Write a song as MIDI, atomically (as `write_midi`): a track named "Melody" (`melody`:
    (N, 4) monophonic notes on the accompaniment's grid, or a Piece on it) and one named
    "Piano" (`accompaniment`), or with `merge` a single "Piano" track holding both; the chords
    as marker events at their onsets (`chords`: spans (start step, end step, name) or one name
    per beat, see `leadsheet.chord_spans`; names like `C:maj`, `A:min7`, `F:maj/3`; an "N"
    marker where a chord ends without the next starting); the key as a key signature event
    (`key`: "G:maj", or a list of (step, key)). `read_midi` reads the notes back unchanged and
    `read_song_midi` the tracks, chords and key. Raises InputError for a bad chord name, key
    or melody (one that is not monophonic), naming it."""
    path = Path(path)
    score = song_to_score(accompaniment, melody, chords, key, merge, ticks_per_quarter)
    with atomic_path(path, ".tmp") as tmp:
        score.dump_midi(str(tmp))
    return path


def read_song_midi(path, steps_per_beat: int = 4, pitch_range: tuple[int, int] = PIANO_RANGE,
                   max_bytes: int = MAX_FILE_BYTES) -> SongMidi:
    """Read a file written by `write_song_midi` (on its own ticks, no beat file): every track
    as a Piece (`read_midi_tracks`), the chord markers as spans (each runs to the next chord
    marker or the piece's end; an "N" marker ends a chord: "N" and no chord are the same
    here, so no "N" spans are returned), the key
    signatures as keys. Markers that are not chord names (other than the `end` marker) are
    left out."""
    from .leadsheet import key_name
    from .structure import parse_chord

    path = Path(path)
    tracks, _ = read_midi_tracks(path, beats=None, steps_per_beat=steps_per_beat, pitch_range=pitch_range,
                                 max_bytes=max_bytes)
    score = _load_score(path, max_bytes)
    T = int(tracks[0][1].bar_starts[-1])
    to_step = lambda tick: int(_round(np.array(tick * steps_per_beat / score.tpq)))
    marks = []
    for m in score.markers:
        text = m.text.strip()
        if text.lower() == END_MARKER:
            continue
        try:
            parse_chord(text)
        except InputError:
            continue
        marks.append((to_step(m.time), text))
    marks.sort(key=lambda x: x[0])
    chords = []
    for i, (s, name) in enumerate(marks):
        e = marks[i + 1][0] if i + 1 < len(marks) else T
        if e > s and s < T and name != "N":
            chords.append((s, min(e, T), name))
    keys = [(to_step(k.time), key_name(k.key, k.tonality)) for k in score.key_signatures]
    return SongMidi(tracks, chords, keys)
