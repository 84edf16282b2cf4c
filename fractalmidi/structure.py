"""POP909 structure annotations (form, chords, key, melody) read and aligned with the MIDI.

The annotations of Dai, Zhang and Dannenberg (2020; `../shared/data/pop909-structure/`, one
folder `NNN/` per song) use their own bar lines: 4/4 bars of 16 steps (16th notes) counted
from the start of `melody.txt` and `finalized_chord.txt`. The MIDI files of POP909, read on
the beat grid of `beat_midi.txt` (4 steps per beat), start elsewhere. `align_song` finds the
whole-beat shift that puts the most annotated melody onsets on a MELODY-track note of the
same pitch and step, then lays the phrase labels and the chords on bars counted from that
shift and maps them onto the piece's own bars, beats and steps.

- `parse_form("i4A4B8o3")` -> `[Phrase("i", 4), ...]`; `bar_labels(phrases)` per bar;
- `parse_chord("A:min7/b7")` -> `Chord(root, quality, bass, exact)` over `QUALITIES`;
- `read_annotations(song_dir)` -> `Annotations` (both form strings, chords, keys, melody);
- `find_shift(annotated_melody, midi_melody)` -> (shift in beats, match share);
- `align_song(midi_path, song_dir)` -> `Alignment`.

A song *aligns well* when its match share is at least `GOOD_MATCH` (0.8): below that, the
labels and chords are masked (`bar_mask`, `beat_chord_mask` all False) and the song keeps
only its notes. Every parse error is an `InputError` naming the file, the line and the part.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError
from .tokens_fractalmidi import FORM_KINDS, MAX_FORM_POSITION  # noqa: F401 (the model's form inputs)
from .midi_io import POP909_BEAT_FILE, find_midi_files, read_beats, read_midi_tracks

from .form_fractalmidi import MAX_FORM_BARS, MAX_PHRASE_BARS  # noqa: E402,F401
STEPS_PER_BEAT = 4
BEATS_PER_BAR = 4  # the annotations' bars are 4/4
BAR_STEPS = STEPS_PER_BEAT * BEATS_PER_BAR
GOOD_MATCH = 0.8  # share of annotated onsets on a MELODY note for a song to "align well"
MAX_MELODY_NOTES = 20000
MAX_CHORDS = 20000
MAX_SHIFT_BEATS = 512  # shifts searched: -MAX..+MAX beats (clipped to where the melodies overlap)
MELODY_TRACK = "MELODY"

PITCH_CLASSES = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
# the chord-quality vocabulary: index = the id used in `Alignment.beat_quality`
QUALITIES = (
    "maj", "min", "7", "maj7", "min7", "dim", "dim7", "hdim7", "aug",
    "sus2", "sus4", "sus4(b7)", "maj6", "min6",
)
QUALITY_ID = {q: i for i, q in enumerate(QUALITIES)}
# qualities outside the vocabulary and the vocabulary quality each reduces to
REDUCE = {
    "maj(9)": "maj", "maj9": "maj7", "maj6(9)": "maj6", "9": "7", "min9": "min7", "min(9)": "min",
    "min7(11)": "min7", "minmaj7": "min", "sus4(b7,9)": "sus4(b7)", "sus4(b7": "sus4",
    "7(b9)": "7", "7(#9)": "7", "11": "7", "13": "7", "min11": "min7", "maj13": "maj7",
    "aug7": "aug", "sus2(b7)": "sus2", "maj(11)": "maj", "min(11)": "min",
}
# scale degrees of a chord's bass ("/b3") in semitones above the root
DEGREES = {"1": 0, "b2": 1, "2": 2, "#2": 3, "b3": 3, "3": 4, "4": 5, "#4": 6, "b5": 6, "5": 7,
           "#5": 8, "b6": 8, "6": 9, "bb7": 9, "b7": 10, "7": 11, "b9": 1, "9": 2}


# ------------------------------------------------------------------------- form
# the form's parsing and per-bar view live in `form_fractalmidi` (carried with Hub checkpoints)
from .form_fractalmidi import (  # noqa: E402,F401
    REPEATING, BarLabels, FormError, Phrase, bar_labels, fit_form, form_features, form_kind, form_string,
    repeat_sources,
)
from .form_fractalmidi import parse_form as _parse_form  # noqa: E402


def parse_form(text: str, where: str = "form") -> list[Phrase]:
    """`"i4A4B8o3"` -> phrases (`form_fractalmidi.parse_form`); a bad one is an InputError."""
    try:
        return _parse_form(text, where)
    except FormError as e:
        raise InputError(str(e)) from None


# ------------------------------------------------------------------------- chords
@dataclass(frozen=True)
class Chord:
    root: int  # pitch class 0-11, -1 for no chord ("N")
    quality: str  # one of QUALITIES, or "N"
    bass: int  # pitch class of the bass, -1 for no chord
    exact: bool  # the annotation's quality is in the vocabulary (False: reduced by REDUCE)


NO_CHORD = Chord(-1, "N", -1, True)


def parse_pitch_class(name: str, where: str = "chord") -> int:
    m = re.fullmatch(r"([A-Ga-g])([#b]*)", name.strip())
    if not m or len(m.group(2)) > 2:
        raise InputError(f"{where}: bad root {name!r} (expected a note name like C, F#, Bb)")
    pc = PITCH_CLASSES[m.group(1).upper()] + m.group(2).count("#") - m.group(2).count("b")
    return pc % 12


def parse_chord(name: str, where: str = "chord") -> Chord:
    """`"B:maj"`, `"A:min7/b7"`, `"N"` -> Chord(root, quality in QUALITIES, bass, exact).

    Qualities outside the vocabulary reduce to the nearest one in it (`REDUCE`, exact=False);
    an unknown quality or bass degree raises InputError naming it."""
    s = "".join(ch for ch in name.strip() if ch.isprintable())  # a few names end in a stray \x01
    if s == "N":
        return NO_CHORD
    if ":" not in s:
        raise InputError(f"{where}: bad chord {s!r} (expected ROOT:QUALITY like 'C:maj', or 'N')")
    root_name, rest = s.split(":", 1)
    root = parse_pitch_class(root_name, f"{where}: chord {s!r}")
    quality, _, degree = rest.partition("/")
    base = re.sub(r"\(.*$", "", "".join(ch for ch in quality if ch.isprintable()))
    if quality in QUALITY_ID:
        exact = True
    elif quality in REDUCE:
        quality, exact = REDUCE[quality], False
    elif base in QUALITY_ID or base in REDUCE:  # an extension in parentheses, or a cut-off one
        quality, exact = REDUCE.get(base, base), False
    else:
        raise InputError(f"{where}: unknown chord quality {quality!r} in {s!r} (known: {', '.join(QUALITIES)})")
    bass = root
    if degree:
        if degree not in DEGREES:
            raise InputError(f"{where}: unknown bass degree {degree!r} in {s!r}")
        bass = (root + DEGREES[degree]) % 12
    return Chord(root, quality, bass, exact)


# ------------------------------------------------------------------------- files
@dataclass
class Annotations:
    song: str
    forms: list[str]  # form strings of annotator 1 and 2 (human_label1/2.txt)
    phrases: list[list[Phrase]]  # parsed, one list per annotator
    chord_names: list[str]  # as written
    chords: list[Chord]
    chord_beats: np.ndarray  # (C,) beats of each chord
    chord_pcs: list[list[int]]  # the annotated pitch classes of each chord
    keys: list[str]  # analyzed_key.txt, first the song's key (more lines: later keys)
    melody: np.ndarray  # (N, 4) pitch, start, end, velocity (100) on the annotation's 16th grid

    @property
    def key(self) -> str:
        return self.keys[0] if self.keys else ""

    @property
    def chord_total_beats(self) -> int:
        return int(self.chord_beats.sum())


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise InputError(f"{path}: annotation file not found")
    if path.stat().st_size > 4 * 1024 * 1024:
        raise InputError(f"{path}: too large for an annotation file")
    return path.read_text(errors="replace")


def read_form_file(path) -> tuple[str, list[Phrase]]:
    path = Path(path)
    lines = [ln.strip() for ln in _read_text(path).splitlines() if ln.strip()]
    if len(lines) != 1:
        raise InputError(f"{path}: expected one line holding the form string, found {len(lines)}")
    return lines[0], parse_form(lines[0], f"{path}, line 1")


def read_chords(path):
    """finalized_chord.txt: `NAME [pcs] ROOT BEATS` a line (`N [] BEATS` for no chord)."""
    path = Path(path)
    names, chords, beats, pcs = [], [], [], []
    for i, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}, line {i}"
        m = re.fullmatch(r"\s*(\S+)\s*\[([^\]]*)\]\s*(.*?)\s*", line)
        if not m:
            raise InputError(f"{where}: expected 'NAME [pitch classes] ROOT BEATS', got {line.strip()[:60]!r}")
        name, pc_text, tail = m.groups()
        try:
            pc = [int(x) for x in pc_text.replace(",", " ").split()]
            nums = [int(x) for x in tail.split()]
        except ValueError:
            raise InputError(f"{where}: expected whole numbers in {line.strip()[:60]!r}") from None
        if any(not 0 <= p < 12 for p in pc):
            raise InputError(f"{where}: pitch classes must be 0-11, got {pc}")
        if len(nums) not in (1, 2) or (len(nums) == 1 and name != "N"):
            raise InputError(f"{where}: expected ROOT and BEATS after the pitch classes, got {tail!r}")
        n_beats = nums[-1]
        if not 1 <= n_beats <= 4 * MAX_FORM_BARS:
            raise InputError(f"{where}: chord length {n_beats} beats, allowed 1-{4 * MAX_FORM_BARS}")
        chord = parse_chord(name, where)
        names.append(name)
        chords.append(chord)
        beats.append(n_beats)
        pcs.append(pc)
        if len(chords) > MAX_CHORDS:
            raise InputError(f"{path}: more than {MAX_CHORDS} chords")
    if not chords:
        raise InputError(f"{path}: no chords")
    return names, chords, np.array(beats, np.int64), pcs


def read_melody(path) -> np.ndarray:
    """melody.txt: `PITCH DURATION` (16ths) a line, pitch 0 a rest -> (N, 4) notes on 16ths."""
    path = Path(path)
    notes, t = [], 0
    for i, line in enumerate(_read_text(path).splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        where = f"{path}, line {i}"
        if len(parts) != 2:
            raise InputError(f"{where}: expected 'PITCH DURATION', got {line.strip()[:60]!r}")
        try:
            pitch, dur = int(parts[0]), int(parts[1])
        except ValueError:
            raise InputError(f"{where}: expected whole numbers 'PITCH DURATION', got {line.strip()[:60]!r}") from None
        if not 0 <= pitch <= 127:
            raise InputError(f"{where}: pitch {pitch} outside 0-127 (0 = rest)")
        if not 1 <= dur <= BAR_STEPS * MAX_FORM_BARS:
            raise InputError(f"{where}: duration {dur} sixteenths, allowed 1-{BAR_STEPS * MAX_FORM_BARS}")
        if pitch:
            notes.append((pitch, t, t + dur, 100))
            if len(notes) > MAX_MELODY_NOTES:
                raise InputError(f"{path}: more than {MAX_MELODY_NOTES} notes")
        t += dur
    return np.array(notes, np.int64).reshape(-1, 4)


def read_key(path) -> list[str]:
    """analyzed_key.txt: one key a line (`Gb:maj`); several lines are later keys. Lines that
    run two keys together (`G:majE:maj`, as in a few files) are split."""
    path = Path(path)
    keys = []
    for i, line in enumerate(_read_text(path).splitlines(), start=1):
        s = line.strip()
        if not s:
            continue
        found = re.findall(r"[A-G][#b]?:(?:maj|min)", s)
        if not found or "".join(found) != s:
            raise InputError(f"{path}, line {i}: bad key {s[:40]!r} (expected like 'Gb:maj' or 'A:min')")
        keys.extend(found)
    return keys


def read_annotations(song_dir) -> Annotations:
    """Read one song's annotation folder (human_label1/2.txt, finalized_chord.txt,
    analyzed_key.txt, melody.txt). Raises InputError naming the file and line."""
    d = Path(song_dir)
    if not d.is_dir():
        raise InputError(f"{d}: annotation folder not found")
    forms, phrases = [], []
    for k in (1, 2):
        f, p = read_form_file(d / f"human_label{k}.txt")
        forms.append(f)
        phrases.append(p)
    names, chords, beats, pcs = read_chords(d / "finalized_chord.txt")
    keys = read_key(d / "analyzed_key.txt")
    melody = read_melody(d / "melody.txt")
    if len(melody) == 0:
        raise InputError(f"{d / 'melody.txt'}: no notes")
    return Annotations(d.name, forms, phrases, names, chords, beats, pcs, keys, melody)


# ------------------------------------------------------------------------- alignment
def find_shift(annotated: np.ndarray, midi: np.ndarray, steps_per_beat: int = STEPS_PER_BEAT,
               max_shift_beats: int = MAX_SHIFT_BEATS) -> tuple[int, float]:
    """The whole-beat shift k that best matches: annotated step s lands on piece step
    s + k * steps_per_beat. Match = share of annotated onsets at which a `midi` note of the
    same pitch starts. Ties go to the shift nearest 0 (then the earlier); no match at all gives
    (0, 0.0). Shifts searched: where the two overlap, within +-max_shift_beats. Returns (k, share)."""
    annotated = np.asarray(annotated, np.int64).reshape(-1, 4)
    midi = np.asarray(midi, np.int64).reshape(-1, 4)
    if len(annotated) == 0 or len(midi) == 0:
        return 0, 0.0
    length = int(max(midi[:, 1].max(), 0)) + 1
    codes = midi[:, 0] * (length + 1) + midi[:, 1]
    codes = np.unique(codes[midi[:, 1] >= 0])
    lo = int(np.floor(-annotated[:, 1].max() / steps_per_beat))
    hi = int(np.ceil((length - annotated[:, 1].min()) / steps_per_beat))
    lo, hi = max(lo, -max_shift_beats), min(hi, max_shift_beats)
    if hi < lo:
        return 0, 0.0
    shifts = np.arange(lo, hi + 1)
    steps = annotated[None, :, 1] + shifts[:, None] * steps_per_beat  # (S, N)
    inside = (steps >= 0) & (steps < length)
    c = annotated[None, :, 0] * (length + 1) + np.clip(steps, 0, length - 1)
    pos = np.searchsorted(codes, c)
    hit = (pos < len(codes)) & (codes[np.minimum(pos, len(codes) - 1)] == c) & inside
    score = hit.sum(1)
    best = score.max()
    if best == 0:
        return 0, 0.0
    cand = shifts[score == best]
    k = int(cand[np.argmin(np.abs(cand) * 2 + (cand > 0))])
    return k, float(best / len(annotated))


@dataclass
class Alignment:
    """One song's annotations on the piece's grid (piece = the MIDI read with its beat file,
    4 steps per beat). Masks are False where a level is undefined: outside the annotated
    bars / chords, or everywhere when the song does not align well."""

    song: str
    shift_beats: int  # annotation step s is piece step s + 4 * shift_beats
    match: float  # share of annotated melody onsets on a MELODY note of the same pitch and step
    aligned_well: bool  # match >= the threshold used (GOOD_MATCH by default)
    on_bar_line: bool  # the shift lands on a downbeat of the beat file
    key: str
    keys: list[str]
    form: str  # the form string used (annotator 1 by default)
    phrases: list[Phrase]
    num_steps: int  # of the piece
    bar_starts: np.ndarray  # (B + 1,) the piece's bar lines (steps)
    # per piece bar: the annotation bar at the bar's first step
    bar_mask: np.ndarray  # (B,) bool: label defined
    bar_on_grid: np.ndarray  # (B,) bool: the piece bar starts on an annotation bar line
    bar_letter: list[str]  # (B,) phrase letter, "" where masked
    bar_phrase: np.ndarray  # (B,) phrase index, -1 where masked
    bar_position: np.ndarray  # (B,) position of the annotation bar in its phrase, -1 where masked
    bar_phrase_length: np.ndarray  # (B,) bars of its phrase, 0 where masked
    bar_melodic: np.ndarray  # (B,) bool
    step_form_bar: np.ndarray  # (T,) annotation bar index of each step, -1 where masked
    # per piece beat (step // 4)
    beat_chord_mask: np.ndarray  # (T // 4,) bool: a chord annotated there (N counts as one)
    beat_root: np.ndarray  # pitch class, -1 for N or masked
    beat_quality: np.ndarray  # index into QUALITIES, -1 for N or masked
    beat_bass: np.ndarray  # pitch class, -1 for N or masked
    melody: np.ndarray  # (N, 4) annotated melody on the piece's steps (may start before 0 / run past the end)
    midi_melody: np.ndarray  # (M, 4) the MIDI MELODY track's notes
    notes: dict = field(default_factory=dict)  # track name -> (N, 4) notes of the piece

    def summary(self) -> dict:
        return {
            "song": self.song, "shift_beats": self.shift_beats, "match": round(self.match, 4),
            "aligned_well": self.aligned_well, "on_bar_line": self.on_bar_line, "key": self.key,
            "form": self.form, "piece_bars": int(len(self.bar_mask)),
            "labelled_bars": int(self.bar_mask.sum()), "bars_on_grid": int((self.bar_mask & self.bar_on_grid).sum()),
            "chord_beats": int(self.beat_chord_mask.sum()),
        }


def align(ann: Annotations, tracks: dict, bar_starts, downbeat_steps, annotator: int = 1,
          threshold: float = GOOD_MATCH, melody_track: str = MELODY_TRACK) -> Alignment:
    """Align annotations with a piece given as its tracks' notes (name -> (N, 4)) and bar lines."""
    if melody_track not in tracks:
        raise InputError(f"song {ann.song}: no {melody_track} track (tracks: {', '.join(tracks)})")
    if annotator not in (1, 2):
        raise InputError(f"annotator must be 1 or 2, got {annotator}")
    midi_mel = np.asarray(tracks[melody_track], np.int64).reshape(-1, 4)
    bar_starts = np.asarray(bar_starts, np.int64)
    T = int(bar_starts[-1])
    k, match = find_shift(ann.melody, midi_mel)
    off = k * STEPS_PER_BEAT
    good = match >= threshold
    phrases = ann.phrases[annotator - 1]
    labels = bar_labels(phrases)
    nb = len(bar_starts) - 1

    # per piece bar: the annotation bar holding the piece bar's first step
    rel = bar_starts[:-1] - off
    j = np.floor_divide(rel, BAR_STEPS)
    bar_mask = (rel >= 0) & (j < len(labels)) & good
    jj = np.where(bar_mask, j, 0)
    bar_on_grid = (rel % BAR_STEPS) == 0
    if len(labels):
        bar_letter = [labels.letter[a] if m else "" for a, m in zip(jj, bar_mask)]
        bar_phrase = np.where(bar_mask, labels.phrase[jj], -1)
        bar_position = np.where(bar_mask, labels.position[jj], -1)
        bar_len = np.where(bar_mask, labels.length[jj], 0)
        bar_mel = bar_mask & labels.melodic[jj]
    else:  # pragma: no cover - parse_form never returns no phrases
        bar_letter, bar_phrase = [""] * nb, np.full(nb, -1)
        bar_position, bar_len, bar_mel = np.full(nb, -1), np.zeros(nb, np.int64), np.zeros(nb, bool)
    steps = np.arange(T) - off
    sj = np.floor_divide(steps, BAR_STEPS)
    step_form_bar = np.where((steps >= 0) & (sj < len(labels)) & good, sj, -1)

    # per piece beat: chords laid from the shift, one annotated beat = one piece beat
    n_beats = T // STEPS_PER_BEAT
    ends = np.cumsum(ann.chord_beats)
    beat_idx = np.arange(n_beats) - k  # annotated beat of each piece beat
    ci = np.searchsorted(ends, beat_idx, side="right")
    chord_mask = (beat_idx >= 0) & (ci < len(ann.chords)) & good
    ci = np.where(chord_mask, ci, 0)
    root = np.array([c.root for c in ann.chords])[ci]
    qual = np.array([QUALITY_ID.get(c.quality, -1) for c in ann.chords])[ci]
    bass = np.array([c.bass for c in ann.chords])[ci]
    root, qual, bass = (np.where(chord_mask, a, -1).astype(np.int64) for a in (root, qual, bass))

    mel = ann.melody.copy()
    mel[:, 1:3] += off
    return Alignment(
        song=ann.song, shift_beats=k, match=match, aligned_well=bool(good),
        on_bar_line=bool(off in set(int(s) for s in downbeat_steps)), key=ann.key, keys=list(ann.keys),
        form=ann.forms[annotator - 1], phrases=phrases, num_steps=T, bar_starts=bar_starts,
        bar_mask=bar_mask, bar_on_grid=bar_on_grid, bar_letter=bar_letter,
        bar_phrase=bar_phrase.astype(np.int64), bar_position=bar_position.astype(np.int64),
        bar_phrase_length=bar_len.astype(np.int64), bar_melodic=bar_mel,
        step_form_bar=step_form_bar.astype(np.int64), beat_chord_mask=chord_mask,
        beat_root=root, beat_quality=qual, beat_bass=bass, melody=mel, midi_melody=midi_mel,
        notes={name: np.asarray(n) for name, n in tracks.items()},
    )


def align_song(midi_path, song_dir, beats="auto", annotator: int = 1, threshold: float = GOOD_MATCH) -> Alignment:
    """Read a POP909 song (its MIDI with the beat file, 4 steps per beat) and its annotation
    folder, and align them (see `align`)."""
    ann = read_annotations(song_dir)
    midi_path = Path(midi_path)
    pieces, report = read_midi_tracks(midi_path, beats=beats, steps_per_beat=STEPS_PER_BEAT)
    tracks = {name: p.notes for name, p in pieces}
    piece = pieces[0][1]
    beat_file = Path(report.grid[len("beat file "):]) if report.grid.startswith("beat file ") else None
    if beat_file is not None:
        _, down = read_beats(beat_file)
        downbeat_steps = report.first_beat_step + STEPS_PER_BEAT * np.nonzero(down)[0]
    else:
        downbeat_steps = piece.bar_starts[:-1]
    return align(ann, tracks, piece.bar_starts, downbeat_steps, annotator, threshold)


def chord_coverage(annotations) -> dict:
    """Share of chord beats (N excluded) whose quality is in QUALITIES as written, and the
    qualities outside it with their beats."""
    total = exact = 0
    outside: dict[str, int] = {}
    for ann in annotations:
        for name, c, b in zip(ann.chord_names, ann.chords, ann.chord_beats):
            if c.quality == "N":
                continue
            total += int(b)
            if c.exact:
                exact += int(b)
            else:
                q = "".join(ch for ch in name.split(":", 1)[1] if ch.isprintable())
                outside[q] = outside.get(q, 0) + int(b)
    return {"chord_beats": total, "in_vocabulary": exact, "coverage": exact / total if total else 0.0,
            "outside": dict(sorted(outside.items(), key=lambda kv: -kv[1]))}


def song_pairs(pop909_dir, structure_dir) -> list[tuple[str, Path, Path]]:
    """(song id, MIDI file, annotation folder) for every song with both."""
    structure_dir = Path(structure_dir)
    out = []
    for midi, _ in find_midi_files(pop909_dir):
        song = midi.parent.name
        if (structure_dir / song).is_dir() and (midi.parent / POP909_BEAT_FILE).is_file():
            out.append((song, midi, structure_dir / song))
    return sorted(out)


# ------------------------------------------------------------------------- chord symbols, chord tones
# semitones above the root of each quality's chord tones (textbook spellings). The pitch-class
# lists of `finalized_chord.txt` agree for every quality but three, where the annotation tool's
# lists are wrong: maj7 is listed with b7 (0 4 7 10, as dominant 7), hdim7 with bb7 (0 3 6 9,
# as dim7) and sus4(b7) without its b7 (0 5 7); and a bass outside the chord is never listed.
QUALITY_INTERVALS = {
    "maj": (0, 4, 7), "min": (0, 3, 7), "7": (0, 4, 7, 10), "maj7": (0, 4, 7, 11),
    "min7": (0, 3, 7, 10), "dim": (0, 3, 6), "dim7": (0, 3, 6, 9), "hdim7": (0, 3, 6, 10),
    "aug": (0, 4, 8), "sus2": (0, 2, 7), "sus4": (0, 5, 7), "sus4(b7)": (0, 5, 7, 10),
    "maj6": (0, 4, 7, 9), "min6": (0, 3, 7, 9),
}


def chord_pitch_classes(root: int, quality, bass: int = -1) -> frozenset:
    """The pitch classes of a chord: its quality's `QUALITY_INTERVALS` above `root` (0-11),
    plus `bass` when given (>= 0; a slash chord's bass is one of its notes). `quality` is a
    name in QUALITIES or its index (`QUALITY_ID`, as in `Alignment.beat_quality`). No chord
    (root < 0, quality "N" or an index < 0) has none: an empty set."""
    if isinstance(quality, (int, np.integer)):
        quality = QUALITIES[int(quality)] if 0 <= int(quality) < len(QUALITIES) else "N"
    if int(root) < 0 or quality == "N":
        return frozenset()
    if quality not in QUALITY_INTERVALS:
        raise InputError(f"unknown chord quality {quality!r} (known: {', '.join(QUALITIES)})")
    pcs = {(int(root) + i) % 12 for i in QUALITY_INTERVALS[quality]}
    if bass is not None and int(bass) >= 0:
        pcs.add(int(bass) % 12)
    return frozenset(pcs)


# lead-sheet suffixes (after the root, before any "/bass") -> (quality in QUALITIES, exact)
SYMBOL_QUALITIES = {
    "": "maj", "M": "maj", "maj": "maj", "major": "maj",
    "m": "min", "mi": "min", "min": "min", "minor": "min", "-": "min",
    "7": "7", "dom7": "7",
    "maj7": "maj7", "M7": "maj7", "ma7": "maj7", "Δ": "maj7", "Δ7": "maj7",
    "m7": "min7", "mi7": "min7", "min7": "min7", "-7": "min7",
    "dim": "dim", "o": "dim", "°": "dim",
    "dim7": "dim7", "o7": "dim7", "°7": "dim7",
    "m7b5": "hdim7", "min7b5": "hdim7", "-7b5": "hdim7", "ø": "hdim7", "ø7": "hdim7",
    "aug": "aug", "+": "aug",
    "sus2": "sus2", "sus4": "sus4", "sus": "sus4", "7sus4": "sus4(b7)", "7sus": "sus4(b7)",
    "6": "maj6", "M6": "maj6", "maj6": "maj6", "m6": "min6", "min6": "min6", "-6": "min6",
}
# lead-sheet extensions outside the vocabulary and the quality each reduces to (as `REDUCE`)
SYMBOL_REDUCE = {
    "add9": "maj", "add2": "maj", "madd9": "min", "9": "7", "11": "7", "13": "7",
    "7b9": "7", "7#9": "7", "7b5": "7", "7#5": "aug", "maj9": "maj7", "M9": "maj7", "maj13": "maj7",
    "m9": "min7", "min9": "min7", "m11": "min7", "mM7": "min", "mmaj7": "min", "minmaj7": "min",
    "aug7": "aug", "+7": "aug", "69": "maj6", "m69": "min6", "9sus4": "sus4(b7)", "sus2(b7)": "sus2",
}
CHORD_SYMBOL_EXAMPLES = "e.g. C, Am, G7, F/A, C:maj, A:min7"


def parse_chord_symbol(text: str, where: str = "chord") -> Chord:
    """One chord symbol, in either style -> `Chord(root, quality in QUALITIES, bass, exact)`:

    - lead-sheet: ROOT (A-G, then # or b) + suffix (`SYMBOL_QUALITIES`: `C`, `Am`, `G7`,
      `Cmaj7`, `F#m7b5`, `Bdim`, `Caug`, `Dsus4`, `G7sus4`, `C6` ...; extensions such as `G9`,
      `Cadd9`, `Am9` reduce through `SYMBOL_REDUCE`, exact=False) + optional `/BASS` as a note
      name (`F/A`, `C/Bb`);
    - annotation (`parse_chord`): `C:maj`, `A:min7`, `Bb:maj7`, `C:maj/3` (bass as a degree),
      and also `C:maj/E` (bass as a note name);
    - `N`: no chord (`NO_CHORD`).
    Raises InputError "{where}: 'Hm' is not a chord symbol (e.g. ...)"."""
    s = str(text).strip()
    bad = InputError(f"{where}: {s[:24]!r} is not a chord symbol ({CHORD_SYMBOL_EXAMPLES})")
    if s == "N":
        return NO_CHORD
    if not s or len(s) > 24:
        raise bad
    head, slash, bass_text = s.partition("/")
    bass = None
    if slash:
        m = re.fullmatch(r"([A-G])([#b]?)", bass_text)
        if m:  # a note name
            bass = parse_pitch_class(bass_text, where)
        elif ":" not in head:  # lead-sheet bass must be a note name
            raise bad
    if ":" in head:
        try:
            chord = parse_chord(head if bass is not None else s, where)
        except InputError:
            raise bad from None
    else:
        m = re.fullmatch(r"([A-G])([#b]?)(.*)", head)
        if not m:
            raise bad
        root = parse_pitch_class(m.group(1) + m.group(2), where)
        suffix = m.group(3)
        if suffix in SYMBOL_QUALITIES:
            chord = Chord(root, SYMBOL_QUALITIES[suffix], root, True)
        elif suffix in SYMBOL_REDUCE:
            chord = Chord(root, SYMBOL_REDUCE[suffix], root, False)
        else:
            raise bad
    if bass is not None:
        chord = Chord(chord.root, chord.quality, bass, chord.exact)
    return chord
