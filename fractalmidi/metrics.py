"""Objective metrics for a `Piece`: muspy's musical metrics on our grid, and structure adherence.

Conventions (see `fractalmidi.piece`): time is counted in grid *steps*, `steps_per_beat` steps
per quarter note; a note sounds on steps start .. end-1 (end exclusive); a "beat" is a quarter
note. Every metric returns a Python float; NaN means "undefined for this piece" (never an error).

Musical metrics. The first five are exactly muspy 0.5's (`muspy.metrics`) on a
`muspy.Music(resolution=steps_per_beat)` holding the same notes in one non-drum track;
`tests/test_metrics.py` checks this to 1e-6. Groove consistency is muspy's on a 4/4 piece whose
bars end where muspy puts its last measure (see below) and generalises it to the piece's own bars.

- pitch_entropy (bits): Shannon entropy, base 2, of the histogram of note pitches (one count per
  note, 128 bins). 0 for one repeated pitch, log2(k) for k pitches used equally often.
  NaN: no notes.
- pitch_class_entropy (bits): the same over pitch classes (pitch % 12, 12 bins); at most
  log2(12) ~= 3.585. NaN: no notes.
- scale_consistency (fraction, 0-1): the largest fraction of notes whose pitch class lies in one
  scale, over the 24 scales: major and natural minor on each of the 12 roots. 1.0 for music in a
  single diatonic key. NaN: no notes.
- polyphony (pitches): the mean number of sounding pitches over the steps where at least one
  pitch sounds (silent steps are left out). A note sounds on steps start .. end-1, exactly as
  muspy's piano roll `roll[time:end]`. Since notes of one pitch never overlap in a `Piece`, the
  number of sounding notes on a step is the number of sounding pitches. NaN: no notes.
- empty_beat_rate (fraction, 0-1): the fraction of beats (quarter notes = steps_per_beat steps)
  on which no note plays. Matches muspy to the edges:
    * beats are counted from the start up to the beat holding the end of the last note:
      n_beats = last_end // steps_per_beat + 1 (the piece's own length, including any silent
      bars after the last note, is NOT used);
    * a note marks beats start // spb .. end // spb *inclusive*, so a note ending exactly on a
      beat line (end exclusive) still marks the beat that follows it as not empty.
  NaN: no notes (muspy: song length < 1 step).
- groove_consistency (fraction, 0-1): 1 - the mean, over consecutive bar pairs, of the Hamming
  distance between the two bars' onset patterns divided by the bar length. A bar's onset
  pattern has one entry per step of the bar (the 16th-note grid at 4 steps per beat), 1 where
  at least one note starts. Differences from muspy's `groove_consistency(music,
  measure_resolution)`, which assumes a constant meter:
    * we use the piece's own bars (any time signatures); muspy cuts the piece into measures of
      `measure_resolution` steps and takes n_measures = last_note_end // measure_resolution + 1,
      so it adds an extra empty measure when the last note ends exactly on a bar line, and
      ignores trailing silent bars. Both agree for a 4/4 piece at 4 steps per beat with
      measure_resolution=16 whose last bar holds the end of the last note (not on its end line);
    * when two consecutive bars differ in length (e.g. 3/4 then 4/4), the shorter pattern is
      padded with zeros at its end and the distance is divided by the longer length;
  NaN: fewer than 2 bars, or no notes (as muspy; silence must not score a perfect groove).

Structure adherence: how well a piece realises the per-bar structure it was asked for (as
produced by Level 0 of the model or given by the user; see `Piece.structure`).

- density_adherence: requested vs realised per-bar density in onsets per step (as
  `Piece.bar_density`): Pearson r (NaN if either series is constant or has < 2 bars), mean
  absolute error (onsets per step) and the number of bars.
- tempo_adherence: requested vs realised per-bar tempo in BPM (as `Piece.bar_tempo`): mean and
  maximum absolute error (BPM).
- structure_adherence: both, against a piece's realised structure, as one flat dict.

`evaluate_piece` gathers the musical metrics of one piece; `summarize` turns a list of such
rows into mean, population std (ddof=0) and count, ignoring NaN.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import InputError
from .piece import Piece

# pitch classes of C major and C natural minor (muspy's `_get_scale`); other roots are rolls
MAJOR_SCALE = np.array([1, 0, 1, 0, 1, 1, 0, 1, 0, 1, 0, 1], bool)
MINOR_SCALE = np.array([1, 0, 1, 1, 0, 1, 0, 1, 1, 0, 1, 0], bool)
# (24, 12): row k < 12 is the major scale on root k, row 12 + k the minor scale on root k
SCALES = np.stack([np.roll(MAJOR_SCALE, r) for r in range(12)] + [np.roll(MINOR_SCALE, r) for r in range(12)])

METRIC_KEYS = (
    "pitch_entropy",
    "pitch_class_entropy",
    "scale_consistency",
    "groove_consistency",
    "polyphony",
    "empty_beat_rate",
    "n_notes",
    "n_bars",
)


# --------------------------------------------------------------------------- helpers
def _entropy(counts: np.ndarray) -> float:
    """Shannon entropy in bits of a histogram; NaN if it is empty."""
    total = counts.sum()
    if total < 1:
        return math.nan
    p = counts[counts > 0] / total  # 0 log 0 = 0, as muspy's nansum
    return max(0.0, float(-(p * np.log2(p)).sum()))  # max: no -0.0 for a single bin


def _covered(starts: np.ndarray, stops: np.ndarray, length: int) -> np.ndarray:
    """(length,) count of intervals [start, stop) covering each index (difference array)."""
    delta = np.zeros(length + 1, np.int64)
    np.add.at(delta, starts, 1)
    np.add.at(delta, stops, -1)
    return np.cumsum(delta[:-1])


# --------------------------------------------------------------------------- pitch metrics
def pitch_entropy(piece: Piece) -> float:
    """Entropy (bits) of the note pitch histogram; NaN without notes (muspy.pitch_entropy)."""
    return _entropy(np.bincount(piece.notes[:, 0], minlength=128))


def pitch_class_entropy(piece: Piece) -> float:
    """Entropy (bits) of the note pitch-class histogram; NaN without notes (muspy.pitch_class_entropy)."""
    return _entropy(np.bincount(piece.notes[:, 0] % 12, minlength=12))


def scale_consistency(piece: Piece) -> float:
    """Largest fraction of notes inside one major / natural-minor scale; NaN without notes
    (muspy.scale_consistency)."""
    n = len(piece.notes)
    if n == 0:
        return math.nan
    pc_counts = np.bincount(piece.notes[:, 0] % 12, minlength=12)
    in_scale = SCALES.astype(np.int64) @ pc_counts  # (24,) notes inside each scale
    return float(in_scale.max() / n)


# --------------------------------------------------------------------------- time metrics
def polyphony(piece: Piece) -> float:
    """Mean number of sounding pitches over the steps where something sounds; NaN without notes
    (muspy.polyphony at resolution = steps_per_beat)."""
    if len(piece.notes) == 0:
        return math.nan
    # notes of one pitch never overlap, so sounding notes per step == sounding pitches per step
    sounding = _covered(piece.notes[:, 1], piece.notes[:, 2], piece.num_steps)
    return float(sounding.sum() / np.count_nonzero(sounding))


def empty_beat_rate(piece: Piece) -> float:
    """Fraction of beats (quarter notes) with no note, up to the last note's end, muspy's way:
    a note marks beats start//spb .. end//spb inclusive; NaN without notes (muspy.empty_beat_rate)."""
    if len(piece.notes) == 0:
        return math.nan
    spb = piece.steps_per_beat
    first, last = piece.notes[:, 1] // spb, piece.notes[:, 2] // spb
    n_beats = int(piece.notes[:, 2].max()) // spb + 1
    occupied = _covered(first, last + 1, n_beats) > 0
    return float(1.0 - occupied.sum() / n_beats)


def groove_consistency(piece: Piece) -> float:
    """1 - mean over consecutive bars of (Hamming distance of onset patterns / bar length), on the
    piece's own bars; bars of unequal length compare over the longer one, the shorter padded
    with zeros. NaN with fewer than 2 bars or no notes."""
    if piece.num_bars < 2 or len(piece.notes) == 0:
        return math.nan
    lengths = piece.bar_lengths
    # (B, longest bar) onset patterns, each bar's steps from its start, zero-padded at the end
    patterns = np.zeros((piece.num_bars, int(lengths.max())), bool)
    starts = piece.notes[:, 1]
    bar = piece.bar_of_step(starts)
    patterns[bar, starts - piece.bar_starts[bar]] = True
    distance = np.count_nonzero(patterns[:-1] != patterns[1:], axis=1)  # (B-1,)
    pair_length = np.maximum(lengths[:-1], lengths[1:])
    return float(1.0 - np.mean(distance / pair_length))


# --------------------------------------------------------------------------- per piece, per set
def evaluate_piece(piece: Piece) -> dict[str, float]:
    """All musical metrics of one piece (keys: `METRIC_KEYS`), plus its note and bar counts."""
    return {
        "pitch_entropy": pitch_entropy(piece),
        "pitch_class_entropy": pitch_class_entropy(piece),
        "scale_consistency": scale_consistency(piece),
        "groove_consistency": groove_consistency(piece),
        "polyphony": polyphony(piece),
        "empty_beat_rate": empty_beat_rate(piece),
        "n_notes": float(len(piece.notes)),
        "n_bars": float(piece.num_bars),
    }


def summarize(rows: list[dict]) -> dict[str, tuple[float, float, int]]:
    """Per key over `rows`: (mean, population std (ddof=0), count), ignoring NaN values.

    Keys are taken from all rows in first-seen order; a row without a key counts as NaN there.
    A key with no non-NaN value gives (nan, nan, 0).
    """
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    out = {}
    for k in keys:
        values = np.array([float(row.get(k, math.nan)) for row in rows], np.float64)
        values = values[~np.isnan(values)]
        if len(values) == 0:
            out[k] = (math.nan, math.nan, 0)
        else:
            out[k] = (float(values.mean()), float(values.std(ddof=0)), int(len(values)))
    return out


# --------------------------------------------------------------------------- structure adherence
def _paired(requested, realised, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Both series as 1-D float arrays; InputError naming both lengths if they differ."""
    a = np.asarray(requested, np.float64).reshape(-1)
    b = np.asarray(realised, np.float64).reshape(-1)
    if len(a) != len(b):
        raise InputError(
            f"requested {what} has {len(a)} bars but the realised {what} has {len(b)} bars; "
            "they must match bar for bar"
        )
    return a, b


def _pearson_r(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; NaN if either series is constant or shorter than 2."""
    if len(a) < 2:
        return math.nan
    da, db = a - a.mean(), b - b.mean()
    na, nb = np.sqrt((da * da).sum()), np.sqrt((db * db).sum())
    if na == 0 or nb == 0:
        return math.nan
    return float(np.clip((da * db).sum() / (na * nb), -1.0, 1.0))


def density_adherence(requested, realised) -> dict[str, float]:
    """Requested vs realised per-bar density (onsets per step): pearson_r, mae, n_bars."""
    a, b = _paired(requested, realised, "density")
    mae = float(np.abs(a - b).mean()) if len(a) else math.nan
    return {"pearson_r": _pearson_r(a, b), "mae": mae, "n_bars": len(a)}


def tempo_adherence(requested, realised) -> dict[str, float]:
    """Requested vs realised per-bar tempo (BPM): mae and max_abs_error, both in BPM."""
    a, b = _paired(requested, realised, "tempo")
    err = np.abs(a - b)
    if len(err) == 0:
        return {"mae": math.nan, "max_abs_error": math.nan}
    return {"mae": float(err.mean()), "max_abs_error": float(err.max())}


def structure_adherence(piece: Piece, density=None, tempo=None) -> dict[str, float]:
    """Compare a requested per-bar density (onsets per step) and/or tempo (BPM) with the piece's
    realised `bar_density()` / `bar_tempo()`. Returns a flat dict: density_pearson_r,
    density_mae (when density is given), tempo_mae, tempo_max_abs_error (when tempo is given)
    and n_bars. Raises InputError if a requested series does not have one value per bar."""
    out: dict[str, float] = {}
    for name, requested in (("density", density), ("tempo", tempo)):
        if requested is None:
            continue
        n = np.asarray(requested).reshape(-1).shape[0]
        if n != piece.num_bars:
            raise InputError(f"requested {name} has {n} bars but the piece has {piece.num_bars} bars")
    if density is not None:
        d = density_adherence(density, piece.bar_density())
        out["density_pearson_r"], out["density_mae"] = d["pearson_r"], d["mae"]
    if tempo is not None:
        t = tempo_adherence(tempo, piece.bar_tempo())
        out["tempo_mae"], out["tempo_max_abs_error"] = t["mae"], t["max_abs_error"]
    out["n_bars"] = piece.num_bars
    return out
