"""The `Piece`: music on a metrical grid, the one representation every part of FractalMIDI shares.

Time is counted in *steps*. A step is a fixed fraction of a quarter note: `steps_per_beat`
steps per quarter note (default 4, so a step is a 16th note). Throughout FractalMIDI a
"beat" is a quarter note, as in MIDI's own tempo (BPM = quarter notes per minute), so a
bar of n/d lasts `n * 4 / d` beats: 4/4 = 16 steps, 3/4 = 12, 6/8 = 12, 2/4 = 8, 7/8 = 14.
Content does not depend on tempo; tempo is its own map from steps to seconds.

A `Piece` holds:
- notes: an (N, 4) int array, one row per note: pitch (MIDI number), start step, end step
  (exclusive, so the note sounds on steps start .. end-1) and velocity (1-127). Notes of one
  pitch never overlap (`normalize_notes` enforces it), which makes the piano roll lossless.
- bars: `bar_starts` (B+1 steps: where each bar starts, then the total length) and the
  time signature of every bar, (B, 2) = numerator, denominator.
- tempo: a map of tempo events on the grid, `tempo_steps` (K,) and `tempo_bpm` (K,): from
  step `tempo_steps[k]` on the tempo is `tempo_bpm[k]` quarter notes per minute.

Structure, per bar (what Level 0 of the model generates; see `Piece.structure`):
- tempo: the bar's mean tempo in BPM, defined by its duration: a bar of b beats that lasts
  s seconds has tempo 60 * b / s (exactly the tempo when the tempo is constant in the bar);
- density: note onsets in the bar divided by the bar's length in steps ("onsets per step";
  a bar of 4/4 with 16 onsets has density 1.0; chords count one onset per note);
- time signature and length in steps.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from .errors import InputError

PIANO_RANGE = (21, 108)  # A0 .. C8, the 88 keys of a piano
NOTE_FIELDS = ("pitch", "start", "end", "velocity")
MIN_BPM, MAX_BPM = 10.0, 1000.0  # tempi outside this are refused as absurd


def bar_length_steps(numerator: int, denominator: int, steps_per_beat: int = 4) -> int:
    """Steps in one bar of `numerator/denominator` (a beat is a quarter note)."""
    if numerator < 1 or denominator < 1 or denominator & (denominator - 1):
        raise InputError(
            f"time signature {numerator}/{denominator} is not valid "
            "(numerator >= 1, denominator a power of two)"
        )
    total = numerator * 4 * steps_per_beat
    if total % denominator:
        raise InputError(
            f"time signature {numerator}/{denominator} does not fit a grid of "
            f"{steps_per_beat} steps per quarter note (a bar would be {total / denominator:g} steps)"
        )
    return total // denominator


def normalize_notes(notes: np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
    """Make grid notes representable: sorted, and no two notes of one pitch overlapping.

    Rules, applied in this order (counts of each are returned):
    - `lengthened`: a note shorter than one step (end <= start) is given one step;
    - `duplicate`: of several notes with the same pitch and start step, the longest (then the
      loudest) is kept and the others dropped;
    - `truncated`: a note still sounding when the next note of its pitch starts ends there.
    Returns the notes sorted by (start, pitch) and the counts.
    """
    notes = np.asarray(notes, dtype=np.int64).reshape(-1, 4).copy()
    counts = {"lengthened": 0, "duplicate": 0, "truncated": 0}
    if len(notes) == 0:
        return notes, counts
    short = notes[:, 2] <= notes[:, 1]
    counts["lengthened"] = int(short.sum())
    notes[short, 2] = notes[short, 1] + 1
    # by pitch, then start, then longest and loudest first
    order = np.lexsort((-notes[:, 3], -notes[:, 2], notes[:, 1], notes[:, 0]))
    notes = notes[order]
    same = (notes[1:, 0] == notes[:-1, 0]) & (notes[1:, 1] == notes[:-1, 1])
    keep = np.concatenate([[True], ~same])
    counts["duplicate"] = int((~keep).sum())
    notes = notes[keep]
    # a note overlapping the next note of the same pitch ends where that one starts
    nxt_same = notes[1:, 0] == notes[:-1, 0]
    overlap = nxt_same & (notes[:-1, 2] > notes[1:, 1])
    counts["truncated"] = int(overlap.sum())
    notes[:-1, 2] = np.where(overlap, notes[1:, 1], notes[:-1, 2])
    order = np.lexsort((notes[:, 0], notes[:, 1]))
    return notes[order], counts


@dataclass
class Piece:
    """Notes, bars and tempo on a metrical grid (see the module docstring for the conventions)."""

    notes: np.ndarray  # (N, 4) int64: pitch, start, end (exclusive), velocity
    bar_starts: np.ndarray  # (B + 1,) int64: first step of each bar, then the total length
    time_signatures: np.ndarray  # (B, 2) int64: numerator, denominator of each bar
    tempo_steps: np.ndarray  # (K,) int64: step of each tempo event; tempo_steps[0] == 0
    tempo_bpm: np.ndarray  # (K,) float64: quarter notes per minute from that step on
    steps_per_beat: int = 4  # steps per quarter note
    pitch_range: tuple[int, int] = field(default=PIANO_RANGE)  # lowest, highest MIDI pitch

    def __post_init__(self):
        self.notes = np.asarray(self.notes, dtype=np.int64).reshape(-1, 4)
        self.bar_starts = np.asarray(self.bar_starts, dtype=np.int64).reshape(-1)
        self.time_signatures = np.asarray(self.time_signatures, dtype=np.int64).reshape(-1, 2)
        self.tempo_steps = np.asarray(self.tempo_steps, dtype=np.int64).reshape(-1)
        self.tempo_bpm = np.asarray(self.tempo_bpm, dtype=np.float64).reshape(-1)
        self.steps_per_beat = int(self.steps_per_beat)
        self.pitch_range = (int(self.pitch_range[0]), int(self.pitch_range[1]))
        self._validate()
        self._merge_tempo_events()

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_bars(
        cls,
        time_signatures,
        bpm=120.0,
        notes=None,
        steps_per_beat: int = 4,
        pitch_range: tuple[int, int] = PIANO_RANGE,
    ) -> "Piece":
        """A piece with the given bars and tempo.

        `time_signatures`: one (numerator, denominator) per bar. `bpm`: one number (constant
        tempo) or one per bar (a tempo event at every bar start). `notes`: optional (N, 4).
        """
        sigs = np.asarray(time_signatures, dtype=np.int64).reshape(-1, 2)
        lengths = [bar_length_steps(n, d, steps_per_beat) for n, d in sigs]
        bar_starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        bpm = np.atleast_1d(np.asarray(bpm, dtype=np.float64))
        if len(bpm) == 1:
            tempo_steps = np.zeros(1, np.int64)
        elif len(bpm) == len(sigs):
            tempo_steps = bar_starts[:-1]
        else:
            raise InputError(f"bpm has {len(bpm)} values for {len(sigs)} bars (give 1 or one per bar)")
        return cls(
            notes=np.zeros((0, 4), np.int64) if notes is None else notes,
            bar_starts=bar_starts,
            time_signatures=sigs,
            tempo_steps=tempo_steps,
            tempo_bpm=bpm,
            steps_per_beat=steps_per_beat,
            pitch_range=pitch_range,
        )

    def replace_notes(self, notes: np.ndarray) -> "Piece":
        """The same bars and tempo with other notes (only the notes are checked: the bars and
        tempo, shared with this piece, were checked when it was made)."""
        piece = copy.copy(self)
        piece.notes = np.asarray(notes, dtype=np.int64).reshape(-1, 4)
        piece._validate_notes()
        return piece

    # ----------------------------------------------------------------- checks
    def _validate(self):
        spb = self.steps_per_beat
        if spb < 1:
            raise InputError(f"steps_per_beat must be >= 1, got {spb}")
        lo, hi = self.pitch_range
        if not 0 <= lo <= hi <= 127:
            raise InputError(f"pitch_range {self.pitch_range} must satisfy 0 <= low <= high <= 127")
        b = self.bar_starts
        if len(b) < 2 or b[0] != 0 or np.any(np.diff(b) <= 0):
            raise InputError("bar_starts must start at 0, increase, and hold at least one bar")
        if len(self.time_signatures) != len(b) - 1:
            raise InputError(
                f"{len(self.time_signatures)} time signatures for {len(b) - 1} bars"
            )
        for i, ((n, d), length) in enumerate(zip(self.time_signatures, np.diff(b))):
            if bar_length_steps(int(n), int(d), spb) != length:
                raise InputError(f"bar {i + 1}: {length} steps do not match time signature {n}/{d}")
        ts, bpm = self.tempo_steps, self.tempo_bpm
        if len(ts) == 0 or len(ts) != len(bpm) or ts[0] != 0 or np.any(np.diff(ts) <= 0):
            raise InputError("tempo_steps must start at 0 and increase, one bpm per event")
        bad = ~np.isfinite(bpm) | (bpm < MIN_BPM) | (bpm > MAX_BPM)
        if bad.any():
            k = int(np.nonzero(bad)[0][0])
            raise InputError(
                f"tempo {bpm[k]:g} BPM at bar {self.bar_of_step(int(ts[k])) + 1} is outside "
                f"the allowed range {MIN_BPM:g}-{MAX_BPM:g} BPM"
            )
        self._validate_notes()

    def _validate_notes(self):
        lo, hi = self.pitch_range
        b = self.bar_starts
        n = self.notes
        if len(n):
            if n[:, 0].min() < lo or n[:, 0].max() > hi:
                raise InputError(f"note pitches must lie in {lo}-{hi}")
            if n[:, 1].min() < 0 or n[:, 2].max() > b[-1] or np.any(n[:, 2] <= n[:, 1]):
                raise InputError(f"notes must satisfy 0 <= start < end <= {b[-1]} steps")
            if n[:, 3].min() < 1 or n[:, 3].max() > 127:
                raise InputError("velocities must lie in 1-127")
            fixed, counts = normalize_notes(n)
            if any(counts.values()):
                raise InputError(f"notes of one pitch overlap ({counts}); use normalize_notes first")
            self.notes = fixed

    def _merge_tempo_events(self):
        """Drop tempo events that repeat the tempo already in force."""
        keep = np.concatenate([[True], np.abs(np.diff(self.tempo_bpm)) > 1e-9])
        self.tempo_steps, self.tempo_bpm = self.tempo_steps[keep], self.tempo_bpm[keep]

    # ----------------------------------------------------------------- sizes
    @property
    def num_bars(self) -> int:
        return len(self.bar_starts) - 1

    @property
    def num_steps(self) -> int:
        return int(self.bar_starts[-1])

    @property
    def num_pitches(self) -> int:
        return self.pitch_range[1] - self.pitch_range[0] + 1

    @property
    def bar_lengths(self) -> np.ndarray:
        return np.diff(self.bar_starts)

    def bar_of_step(self, step) -> np.ndarray:
        """0-based bar index of each step (steps past the end belong to the last bar)."""
        return np.clip(np.searchsorted(self.bar_starts, step, side="right") - 1, 0, self.num_bars - 1)

    # ----------------------------------------------------------------- tempo and time
    def step_bpm(self) -> np.ndarray:
        """(T,) the tempo in force at every step."""
        idx = np.searchsorted(self.tempo_steps, np.arange(self.num_steps), side="right") - 1
        return self.tempo_bpm[idx]

    def step_times(self) -> np.ndarray:
        """(T + 1,) seconds at the start of every step, then at the end of the piece."""
        seconds_per_step = 60.0 / (self.step_bpm() * self.steps_per_beat)
        return np.concatenate([[0.0], np.cumsum(seconds_per_step)])

    @property
    def duration_seconds(self) -> float:
        return float(self.step_times()[-1])

    # ----------------------------------------------------------------- structure
    def bar_tempo(self) -> np.ndarray:
        """(B,) each bar's tempo in BPM: beats in the bar * 60 / the bar's duration in seconds."""
        t = self.step_times()[self.bar_starts]
        beats = self.bar_lengths / self.steps_per_beat
        return 60.0 * beats / np.diff(t)

    def bar_onsets(self) -> np.ndarray:
        """(B,) number of note onsets in each bar."""
        return np.bincount(self.bar_of_step(self.notes[:, 1]), minlength=self.num_bars)

    def bar_density(self) -> np.ndarray:
        """(B,) onsets per step in each bar (onsets in the bar / its length in steps)."""
        return self.bar_onsets() / self.bar_lengths

    def structure(self) -> dict[str, np.ndarray]:
        """Per-bar structure: tempo (BPM), density (onsets per step), time signature, length."""
        return {
            "tempo": self.bar_tempo(),
            "density": self.bar_density(),
            "numerator": self.time_signatures[:, 0].copy(),
            "denominator": self.time_signatures[:, 1].copy(),
            "length": self.bar_lengths.copy(),
        }

    # ----------------------------------------------------------------- piano roll
    def to_roll(self) -> np.ndarray:
        """(3, T, P) uint8 piano roll: onset (0/1), sustain (0/1, the note sounds, onset step
        included) and velocity (1-127 on onset steps, else 0); P pitches from pitch_range[0]."""
        roll = np.zeros((3, self.num_steps, self.num_pitches), np.uint8)
        if len(self.notes) == 0:
            return roll
        p = self.notes[:, 0] - self.pitch_range[0]
        s, e = self.notes[:, 1], self.notes[:, 2]
        roll[0, s, p] = 1
        roll[2, s, p] = self.notes[:, 3]
        # sustain: +1 at start, -1 at end, cumulative sum over time
        delta = np.zeros((self.num_steps + 1, self.num_pitches), np.int32)
        np.add.at(delta, (s, p), 1)
        np.add.at(delta, (e, p), -1)
        roll[1] = np.cumsum(delta[:-1], axis=0) > 0
        return roll

    def with_roll(self, roll: np.ndarray, default_velocity: int = 64) -> "Piece":
        """This piece's bars and tempo with the notes of a (3, T, P) roll (see `roll_to_notes`)."""
        return self.replace_notes(roll_to_notes(roll, self.pitch_range[0], default_velocity))

    # ----------------------------------------------------------------- editing
    def crop_bars(self, first: int, stop: int) -> "Piece":
        """Bars first .. stop-1 (0-based) as a new piece starting at step 0.

        Notes that start inside the range are kept (their ends clipped to it); notes that
        start before it are left out. The tempo in force at the first bar is kept.
        """
        if not 0 <= first < stop <= self.num_bars:
            raise InputError(f"bar range {first + 1}-{stop} is outside the piece's bars 1-{self.num_bars}")
        s0, s1 = int(self.bar_starts[first]), int(self.bar_starts[stop])
        n = self.notes[(self.notes[:, 1] >= s0) & (self.notes[:, 1] < s1)].copy()
        n[:, 1:3] -= s0
        n[:, 2] = np.minimum(n[:, 2], s1 - s0)
        k0 = np.searchsorted(self.tempo_steps, s0, side="right") - 1
        inside = (self.tempo_steps > s0) & (self.tempo_steps < s1)
        tempo_steps = np.concatenate([[0], self.tempo_steps[inside] - s0])
        tempo_bpm = np.concatenate([[self.tempo_bpm[k0]], self.tempo_bpm[inside]])
        return Piece(
            n, self.bar_starts[first : stop + 1] - s0, self.time_signatures[first:stop],
            tempo_steps, tempo_bpm, self.steps_per_beat, self.pitch_range,
        )

    def transpose(self, semitones: int) -> tuple["Piece", int]:
        """Shift every pitch; returns the new piece and how many notes left the pitch range."""
        n = self.notes.copy()
        n[:, 0] += int(semitones)
        inside = (n[:, 0] >= self.pitch_range[0]) & (n[:, 0] <= self.pitch_range[1])
        return self.replace_notes(n[inside]), int((~inside).sum())

    def transpose_range(self) -> tuple[int, int]:
        """The lowest and highest shift in semitones that keeps every note in the pitch range."""
        if len(self.notes) == 0:
            return 0, 0
        return (
            self.pitch_range[0] - int(self.notes[:, 0].min()),
            self.pitch_range[1] - int(self.notes[:, 0].max()),
        )

    def __repr__(self) -> str:
        sigs = sorted({f"{n}/{d}" for n, d in self.time_signatures})
        return (
            f"Piece({self.num_bars} bars, {self.num_steps} steps at {self.steps_per_beat}/beat, "
            f"{len(self.notes)} notes, time signatures {','.join(sigs)}, "
            f"{len(self.tempo_bpm)} tempo events, {self.duration_seconds:.1f} s)"
        )


def roll_to_notes(roll: np.ndarray, low_pitch: int = PIANO_RANGE[0], default_velocity: int = 64) -> np.ndarray:
    """Notes of a (3, T, P) roll: onset, sustain, velocity channels (as `Piece.to_roll`).

    A note starts at every onset and at every sounding step that follows silence (a sustain
    with no onset, as a model may produce); it ends at the next onset of its pitch or when the
    pitch stops sounding. Its velocity is the velocity channel at its start, or
    `default_velocity` where that is 0. Inverse of `to_roll` for normalized notes.
    """
    onset = np.asarray(roll[0]) > 0
    active = (np.asarray(roll[1]) > 0) | onset
    vel = np.asarray(roll[2])
    T, P = active.shape
    prev = np.zeros_like(active)
    prev[1:] = active[:-1]
    starts = onset | (active & ~prev)
    out = []
    for p in np.nonzero(starts.any(axis=0))[0]:
        s = np.nonzero(starts[:, p])[0]
        # the first silent step at or after each start bounds the note, as does the next start
        # (T closes the list: a pitch may sound on every step to the end, with no silent step)
        silent = np.append(np.nonzero(~active[:, p])[0], T)
        first_silent = silent[np.searchsorted(silent, s)]
        nxt = np.concatenate([s[1:], [T]])
        e = np.minimum(first_silent, nxt)
        v = vel[s, p].astype(np.int64)
        v = np.where(v > 0, np.minimum(v, 127), default_velocity)
        out.append(np.stack([np.full_like(s, p + low_pitch), s, e, v], axis=1))
    if not out:
        return np.zeros((0, 4), np.int64)
    notes = np.concatenate(out).astype(np.int64)
    return notes[np.lexsort((notes[:, 0], notes[:, 1]))]
