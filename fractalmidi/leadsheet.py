"""Songs as lead sheets: a melody, chords and a key over the accompaniment's bars.

A `LeadSheet` is the one description that both the POP909 annotations
(`lead_sheet_from_alignment`) and, later, the model's melody and chord levels fill:

- `grid`: a `Piece` giving the bars, time signatures, tempo and steps per beat (the
  accompaniment itself, or any piece on the same grid);
- `melody`: (N, 4) notes (pitch, start, end, velocity) on that grid, monophonic (a note ends
  at or before the next one starts);
- `chords`: spans (start step, end step, name) with names as in the annotations (`C:maj`,
  `A:min7`, `F:maj/3`, `N` for no chord; see `structure.parse_chord`), sorted, not overlapping;
- `key`: the key as in the annotations (`G:maj`, `Eb:min`), or None.

`chord_spans` builds the spans from chords per beat or from spans; `chord_figure` maps a
chord name to a lead-sheet symbol (`C:maj` -> `C`, `A:min7` -> `Am7`, `F:maj/3` -> `F/A`,
`N` -> None); `key_signature("Gb:maj")` -> (-6, 0), the MIDI key signature (sharps > 0 /
flats < 0, tonality 0 major / 1 minor), and `key_name` reverses it.

`write_musicxml` writes a lead sheet as MusicXML through music21 (an optional dependency,
`pip install fractalmidi[leadsheet]`, imported only there): one part with the melody (rests
where there is none, ties where a note crosses a bar line), a chord symbol at each chord
onset, the key signature and the time signatures. The MIDI side (Melody and Piano tracks,
chord markers, key signature) is `midi_io.write_song_midi` / `midi_io.read_song_midi`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from .errors import InputError
from .files import atomic_path
from .piece import Piece

# lead-sheet suffix and music21 chord kind of every quality of structure.QUALITIES
QUALITY_FIGURES = {
    "maj": ("", "major"),
    "min": ("m", "minor"),
    "7": ("7", "dominant-seventh"),
    "maj7": ("maj7", "major-seventh"),
    "min7": ("m7", "minor-seventh"),
    "dim": ("dim", "diminished"),
    "dim7": ("dim7", "diminished-seventh"),
    "hdim7": ("ø7", "half-diminished-seventh"),
    "aug": ("aug", "augmented"),
    "sus2": ("sus2", "suspended-second"),
    "sus4": ("sus4", "suspended-fourth"),
    "sus4(b7)": ("7sus4", "suspended-fourth-seventh"),
    "maj6": ("6", "major-sixth"),
    "min6": ("m6", "minor-sixth"),
}
KIND_QUALITY = {kind: q for q, (_, kind) in QUALITY_FIGURES.items()}
# the pitch classes of each quality above its root (what the symbols must sound)
QUALITY_INTERVALS = {
    "maj": (0, 4, 7), "min": (0, 3, 7), "7": (0, 4, 7, 10), "maj7": (0, 4, 7, 11),
    "min7": (0, 3, 7, 10), "dim": (0, 3, 6), "dim7": (0, 3, 6, 9), "hdim7": (0, 3, 6, 10),
    "aug": (0, 4, 8), "sus2": (0, 2, 7), "sus4": (0, 5, 7), "sus4(b7)": (0, 5, 7, 10),
    "maj6": (0, 4, 7, 9), "min6": (0, 3, 7, 9),
}
SHARP_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
FLAT_NAMES = ("C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B")
PLAIN_NAMES = ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")  # no key given
# bass interval above the root (semitones) -> the degree written after "/" in chord names
BASS_DEGREES = {1: "b2", 2: "2", 3: "b3", 4: "3", 5: "4", 6: "b5", 7: "5", 8: "#5", 9: "6", 10: "b7", 11: "7"}
FIFTHS_LETTERS = "FCGDAEB"  # letter of fifths -1 .. 5 from C
MAX_SPANS = 100000


# ------------------------------------------------------------------------- keys
def key_signature(key: str) -> tuple[int, int]:
    """`"G:maj"` -> (1, 0), `"Eb:min"` -> (-6, 1): sharps (> 0) or flats (< 0) and tonality
    (0 major, 1 minor), as in a MIDI key signature. Keys beyond 7 sharps / flats are respelled
    (`D#:maj` -> Eb major's -3). Raises InputError naming a bad key."""
    m = re.fullmatch(r"\s*([A-Ga-g])([#b]?):(maj|min)\s*", str(key))
    if not m:
        raise InputError(f"bad key {key!r} (expected like 'G:maj', 'Eb:min')")
    letter, acc, mode = m.group(1).upper(), m.group(2), m.group(3)
    fifths = FIFTHS_LETTERS.index(letter) - 1 + 7 * (acc == "#") - 7 * (acc == "b")
    if mode == "min":
        fifths -= 3
    if fifths > 7:
        fifths -= 12
    elif fifths < -7:
        fifths += 12
    return fifths, int(mode == "min")


def _fifths_name(fifths: int) -> str:
    k = fifths + 1
    acc = k // 7
    return FIFTHS_LETTERS[k % 7] + ("#" * acc if acc > 0 else "b" * -acc)


def key_name(sharps: int, tonality: int) -> str:
    """The inverse of `key_signature`: (-6, 0) -> `"Gb:maj"`, (1, 1) -> `"E:min"`."""
    sharps, tonality = int(sharps), int(tonality)
    if not -7 <= sharps <= 7 or tonality not in (0, 1):
        raise InputError(f"bad key signature: {sharps} sharps, tonality {tonality} (expected -7..7 and 0/1)")
    return f"{_fifths_name(sharps + 3 * tonality)}:{'min' if tonality else 'maj'}"


def _note_names(key: str | None) -> tuple[str, ...]:
    if not key:
        return PLAIN_NAMES
    return FLAT_NAMES if key_signature(key)[0] < 0 else SHARP_NAMES


# ------------------------------------------------------------------------- chords
def _parse(name: str, where: str = "chord"):
    from .structure import parse_chord  # structure imports midi_io, which imports this module lazily

    if not isinstance(name, str):
        raise InputError(f"{where}: chord name must be a string like 'C:maj', got {name!r}")
    return parse_chord(name, where)


def chord_name(root: int, quality: str, bass: int | None = None, key: str | None = None) -> str:
    """The annotation-style name of a chord: (9, "min7") -> `"A:min7"`, (5, "maj", 9) ->
    `"F:maj/3"`; root -1 or quality "N" -> `"N"`. Roots spelled with flats in flat keys,
    sharps in sharp keys."""
    if root is None or int(root) < 0 or quality == "N":
        return "N"
    if quality not in QUALITY_FIGURES:
        raise InputError(f"unknown chord quality {quality!r} (known: {', '.join(QUALITY_FIGURES)})")
    root = int(root) % 12
    name = f"{_note_names(key)[root]}:{quality}"
    if bass is not None and int(bass) >= 0 and (int(bass) - root) % 12:
        name += "/" + BASS_DEGREES[(int(bass) - root) % 12]
    return name


def chord_figure(name: str, key: str | None = None, flat: str = "b") -> str | None:
    """A chord name as a lead-sheet symbol: `C:maj` -> `C`, `A:min7` -> `Am7`, `F:maj/3` ->
    `F/A`, `N` -> None. Qualities outside the vocabulary are reduced as `parse_chord` does.
    `flat="-"` gives music21's spelling (`E-m`), which music21's `ChordSymbol` parses."""
    c = _parse(name)
    if c.quality == "N":
        return None
    names = _note_names(key)
    root = names[c.root].replace("b", flat)
    fig = root + QUALITY_FIGURES[c.quality][0]
    if c.bass != c.root:
        fig += "/" + names[c.bass].replace("b", flat)
    return fig


def chord_spans(chords, steps_per_beat: int = 4, num_steps: int | None = None) -> list[tuple[int, int, str]]:
    """Chords as sorted, non-overlapping spans (start step, end step, name), every name
    checked with `structure.parse_chord` (InputError naming a bad one).

    `chords`: spans (start, end, name), or one name per beat (None or "" for no chord there,
    "N" for an explicit no-chord); equal names on consecutive beats make one span. None gives
    no spans. `num_steps`: the length spans must stay within."""
    if chords is None:
        return []
    chords = list(chords)
    if len(chords) > MAX_SPANS:
        raise InputError(f"{len(chords)} chords is more than the limit of {MAX_SPANS}")
    spans = []
    if all(c is None or isinstance(c, str) for c in chords):  # one name per beat
        spb = int(steps_per_beat)
        for i, c in enumerate(chords):
            if c is None or not c.strip():
                continue
            name = c.strip()
            _parse(name, f"chord of beat {i + 1}")
            if spans and spans[-1][2] == name and spans[-1][1] == i * spb:
                spans[-1] = (spans[-1][0], (i + 1) * spb, name)
            else:
                spans.append((i * spb, (i + 1) * spb, name))
    else:
        for i, span in enumerate(chords):
            try:
                start, end, name = span
            except (TypeError, ValueError):
                raise InputError(f"chord {i + 1}: expected (start step, end step, name), got {span!r}") from None
            if not isinstance(name, str):
                raise InputError(f"chord {i + 1}: the name must be a string like 'C:maj', got {name!r}")
            _parse(name.strip(), f"chord {i + 1} ({start}-{end})")
            spans.append((int(start), int(end), name.strip()))
        spans.sort()
    for i, (s, e, name) in enumerate(spans):
        if not 0 <= s < e:
            raise InputError(f"chord {name!r} at steps {s}-{e}: a span needs 0 <= start < end")
        if num_steps is not None and e > num_steps:
            raise InputError(f"chord {name!r} at steps {s}-{e} runs past the end of the piece ({num_steps} steps)")
        if i and s < spans[i - 1][1]:
            raise InputError(f"chord {name!r} at step {s} overlaps chord {spans[i - 1][2]!r} ({spans[i - 1][0]}-{spans[i - 1][1]})")
    return spans


# ------------------------------------------------------------------------- melody
def check_melody(notes, grid: Piece, where: str = "melody") -> np.ndarray:
    """(N, 4) melody notes on `grid`, sorted by onset; InputError unless they lie on the grid
    (0 <= start < end <= its length, pitch 0-127) and are monophonic (each note ends at or
    before the next one starts), naming the first clash."""
    if isinstance(notes, Piece):
        notes = notes.notes
    notes = np.asarray(notes, dtype=np.int64)
    if notes.size == 0:
        return np.zeros((0, 4), np.int64)
    if notes.ndim != 2 or notes.shape[1] != 4:
        raise InputError(f"{where}: expected (N, 4) notes (pitch, start, end, velocity), got shape {notes.shape}")
    notes = notes[np.lexsort((notes[:, 0], notes[:, 1]))]
    T = int(grid.bar_starts[-1])
    bad = (notes[:, 1] < 0) | (notes[:, 2] <= notes[:, 1]) | (notes[:, 2] > T) | (notes[:, 0] < 0) | (notes[:, 0] > 127)
    if bad.any():
        p, s, e, _ = notes[int(np.argmax(bad))]
        raise InputError(f"{where}: note {p} at steps {s}-{e} is not on the grid (0 <= start < end <= {T}, pitch 0-127)")
    clash = notes[1:, 1] < notes[:-1, 2]
    if clash.any():
        i = int(np.argmax(clash))
        a, b = notes[i], notes[i + 1]
        bar = grid.bar_of_step(int(b[1])) + 1
        raise InputError(
            f"{where} is not monophonic: note {b[0]} at step {b[1]} (bar {bar}) starts while note "
            f"{a[0]} ({a[1]}-{a[2]}) still sounds"
        )
    return notes


@dataclass
class LeadSheet:
    """Melody, chords and key over the bars of `grid` (see the module docstring)."""

    grid: Piece
    melody: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.int64))
    chords: list = field(default_factory=list)  # (start, end, name), or one name per beat
    key: str | None = None

    def __post_init__(self):
        self.melody = check_melody(self.melody, self.grid)
        self.chords = chord_spans(self.chords, self.grid.steps_per_beat, int(self.grid.bar_starts[-1]))
        if self.key is not None:
            key_signature(self.key)

    @property
    def melody_piece(self) -> Piece:
        return self.grid.replace_notes(self.melody)

    def chord_at(self, step: int) -> str | None:
        for s, e, name in self.chords:
            if s <= step < e:
                return name
        return None


def lead_sheet_from_alignment(alignment, grid: Piece, velocity: int | None = None) -> LeadSheet:
    """A POP909 song's annotated melody, chords (per beat, from the aligned roots, qualities and
    basses) and key on the piece `grid` (the song read with its beat file, 4 steps per beat).
    Melody notes outside the piece are dropped, those crossing its ends cut."""
    T = int(grid.bar_starts[-1])
    mel = np.asarray(alignment.melody, np.int64).reshape(-1, 4).copy()
    mel[:, 1] = np.clip(mel[:, 1], 0, T)
    mel[:, 2] = np.clip(mel[:, 2], 0, T)
    lo, hi = grid.pitch_range
    mel = mel[(mel[:, 2] > mel[:, 1]) & (mel[:, 0] >= lo) & (mel[:, 0] <= hi)]
    if velocity is not None:
        mel[:, 3] = int(velocity)
    from .structure import QUALITIES

    key = alignment.key or None
    per_beat = []
    for m, r, q, b in zip(alignment.beat_chord_mask, alignment.beat_root, alignment.beat_quality, alignment.beat_bass):
        per_beat.append(chord_name(r, QUALITIES[q] if q >= 0 else "N", b, key) if m else None)
    spb = grid.steps_per_beat
    return LeadSheet(grid, mel, chord_spans(per_beat, spb, T), key)


# ------------------------------------------------------------------------- MusicXML
def _m21_name(pc: int, names) -> str:
    return names[int(pc) % 12].replace("b", "-")


def chord_symbol(name: str, key: str | None = None):
    """A music21 `harmony.ChordSymbol` for a chord name (root, kind and bass set directly),
    or None for `N`."""
    from music21 import harmony

    c = _parse(name)
    if c.quality == "N":
        return None
    names = _note_names(key)
    kind = QUALITY_FIGURES[c.quality][1]
    bass = _m21_name(c.bass, names) if c.bass != c.root else None
    return harmony.ChordSymbol(root=_m21_name(c.root, names), kind=kind, bass=bass)


def write_musicxml(path, melody, chords, key, time_signatures, bar_starts, steps_per_beat: int = 4,
                   title: str | None = None, tempo_bpm: float | None = None):
    """Write a lead sheet as MusicXML (via music21), atomically: one part holding the melody
    ((N, 4) notes or a Piece; rests where there is none; notes crossing a bar line split and
    tied), a chord symbol at each chord onset (`chords` as for `chord_spans`; `N` writes
    none), the key signature (`key` like `G:maj`, or None) and the time signature wherever it
    changes. `bar_starts` (B + 1 steps) and `time_signatures` (B, 2) give the bars.
    Returns the path. Raises InputError for a bad chord, key or melody."""
    from pathlib import Path

    try:
        from music21 import clef, key as m21key, metadata, meter, note, stream, tempo, tie
        from music21.musicxml.m21ToXml import GeneralObjectExporter
    except ImportError:  # pragma: no cover - depends on the installation
        raise InputError("MusicXML output needs music21: pip install 'fractalmidi[leadsheet]'") from None
    grid = Piece.from_bars(np.asarray(time_signatures, np.int64).reshape(-1, 2), 120.0, steps_per_beat=steps_per_beat,
                           pitch_range=(0, 127))
    bar_starts = np.asarray(bar_starts, np.int64).reshape(-1)
    if not np.array_equal(grid.bar_starts, bar_starts):
        raise InputError("bar_starts do not match the time signatures (each bar's length in steps)")
    sheet = LeadSheet(grid, melody.notes if isinstance(melody, Piece) else melody, chords, key)
    spb = grid.steps_per_beat
    names = _note_names(key)  # spelling of the melody's pitches: flats in flat keys
    part = stream.Part()
    part.partName = "Melody"
    notes = sheet.melody
    starts = bar_starts[:-1]
    prev_sig = None
    for b, (s0, s1) in enumerate(zip(starts, bar_starts[1:])):
        s0, s1 = int(s0), int(s1)
        m = stream.Measure(number=b + 1)
        sig = tuple(int(x) for x in grid.time_signatures[b])
        if b == 0:
            m.insert(0, clef.TrebleClef())
            if key:
                tonic, mode = key.split(":")
                m.insert(0, m21key.Key(tonic.replace("b", "-"), "minor" if mode == "min" else "major"))
            if tempo_bpm:
                m.insert(0, tempo.MetronomeMark(number=float(tempo_bpm)))
        if sig != prev_sig:
            m.insert(0, meter.TimeSignature(f"{sig[0]}/{sig[1]}"))
            prev_sig = sig
        # melody fragments in this bar, rests between them
        inside = notes[(notes[:, 1] < s1) & (notes[:, 2] > s0)]
        pos = s0
        for p, ns, ne, _ in inside:
            a, z = max(int(ns), s0), min(int(ne), s1)
            if a > pos:
                m.insert((pos - s0) / spb, note.Rest(quarterLength=(a - pos) / spb))
            n = note.Note(f"{_m21_name(p, names)}{int(p) // 12 - 1}", quarterLength=(z - a) / spb)
            if ns < s0 and ne > s1:
                n.tie = tie.Tie("continue")
            elif ns < s0:
                n.tie = tie.Tie("stop")
            elif ne > s1:
                n.tie = tie.Tie("start")
            m.insert((a - s0) / spb, n)
            pos = z
        if pos < s1:
            m.insert((pos - s0) / spb, note.Rest(quarterLength=(s1 - pos) / spb))
        for cs, _, name in sheet.chords:
            if s0 <= cs < s1:
                sym = chord_symbol(name, key)
                if sym is not None:
                    sym.quarterLength = 0
                    m.insert((cs - s0) / spb, sym)
        part.append(m)
    score = stream.Score()
    score.metadata = metadata.Metadata()
    score.metadata.title = title or ""
    score.insert(0, part)
    try:
        data = GeneralObjectExporter(score).parse()
    except Exception as e:  # music21 refuses durations it cannot notate
        raise InputError(f"MusicXML: music21 could not write the lead sheet ({e})") from None
    path = Path(path)
    with atomic_path(path, ".tmp") as tmp:
        Path(tmp).write_bytes(data)
    return path


def write_lead_sheet_musicxml(path, sheet: LeadSheet, bars: tuple[int, int] | None = None, title: str | None = None):
    """`write_musicxml` of a `LeadSheet`, optionally of bars [first, last) only (0-based),
    cut at those bar lines (notes and chords crossing them are cut too)."""
    g = sheet.grid
    first, last = (0, len(g.bar_starts) - 1) if bars is None else (int(bars[0]), int(bars[1]))
    if not 0 <= first < last <= len(g.bar_starts) - 1:
        raise InputError(f"bars {first}-{last} are not within the piece's {len(g.bar_starts) - 1} bars")
    s0, s1 = int(g.bar_starts[first]), int(g.bar_starts[last])
    mel = sheet.melody[(sheet.melody[:, 1] < s1) & (sheet.melody[:, 2] > s0)].copy()
    mel[:, 1:3] = np.clip(mel[:, 1:3], s0, s1) - s0
    chords = [(max(s, s0) - s0, min(e, s1) - s0, n) for s, e, n in sheet.chords if s < s1 and e > s0]
    tempo_bpm = float(g.tempo_bpm[np.searchsorted(g.tempo_steps, s0, side="right") - 1])
    return write_musicxml(path, mel, chords, sheet.key, g.time_signatures[first:last],
                          g.bar_starts[first:last + 1] - s0, g.steps_per_beat, title, round(tempo_bpm, 2))
