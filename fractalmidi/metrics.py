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

Song metrics (the 16th grid at 4 steps per beat; exact definitions in each function's docstring):

- melody_step_share (fraction, 0-1) and melody_mean_leap (semitones): over consecutive notes of
  the melody (`melody_motion`): the share of moves of at most 2 semitones and the mean absolute
  interval. The melody is the piece's melody track when `evaluate_piece` is given one (e.g. the
  MELODY track of `read_midi_tracks`), else the top voice (`top_voice`: at each onset step the
  highest sounding pitch; a new note when it changes or is struck again). NaN: < 2 notes.
- repeated_bar_rate (fraction) and bar_similarity (Jaccard, 0-1) (`bar_repetition`): a bar is the
  set of its (pitch, onset step within the bar) cells; for each bar with onsets, its best Jaccard
  with another bar with onsets 2+ bars away; the share of bars whose best is >= 0.7 (a near
  copy) and the mean best. NaN: no two bars with onsets 2+ bars apart.
- per-bar feature Frechet distance (`bar_features`, `frechet_distance`,
  `feature_frechet_distance`): a set-level figure between two sets of pieces (there is no
  per-piece value, so it is not in `evaluate_piece`); `fractalmidi evaluate --reference DIR`.
  `frechet_terms` splits it by feature (each feature's own distance, largest first).
- chord_tone_share (fraction, 0-1) (`chord_tone_share`, `strong_beat_steps`): of the melody notes
  (the melody track, else the top voice) starting on a strong beat (beats 1 and 3 of a 4/4 bar,
  the first beat of a bar in any other metre) where a chord is given per beat, the share whose
  pitch class is a chord tone (`structure.chord_pitch_classes`). It needs chords, so it is not
  in `evaluate_piece`. NaN: no such note.
- recognised chords (`recognise_chords`): per beat, the major or minor triad whose pitch classes
  carry the most of the beat's sounding weight (the bass counted twice); exact rule in its
  docstring. chord_match (fraction, 0-1) (`chord_adherence`): of the beats given a chord, the
  share whose recognised triad equals the given chord reduced to major / minor. NaN: no beat
  given a chord.
- form adherence (`form_adherence`): the mean `bar_jaccard` of bars at the same position of two
  phrases of one recurring letter (e.g. bar 3 of both A phrases) and of two phrases of
  different letters, and their ratio (> 1: the repeats are closer than the rest).

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
    "melody_step_share",
    "melody_mean_leap",
    "repeated_bar_rate",
    "bar_similarity",
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


# --------------------------------------------------------------------------- melody and repetition
STEP_SEMITONES = 2  # a move of at most this many semitones (0, 1 or 2) is a step
NEAR_COPY_JACCARD = 0.7  # a bar with Jaccard >= this to a bar 2+ bars away is repeated
MIN_BAR_DISTANCE = 2  # neighbouring bars are not compared: a repeat must be 2+ bars away


def top_voice(piece: Piece) -> np.ndarray:
    """The top voice (skyline) of a piece: (M, 2) int64 rows of (pitch, start step), in time order.

    It is sampled at the onset steps only (steps where at least one note starts): at each onset
    step the top pitch is the highest pitch sounding there (notes started then or still held).
    A new top-voice note begins at an onset step when the top pitch differs from the top pitch
    of the previous onset step, or when it is the same pitch struck again (a note of that pitch
    starts at that step). A melody note held over accompaniment onsets below it is therefore
    one note; rests are skipped (the notes either side of a rest are consecutive)."""
    notes = piece.notes
    if len(notes) == 0:
        return np.zeros((0, 2), np.int64)
    onset_steps = np.unique(notes[:, 1])  # sorted
    # highest sounding pitch at each onset step: notes with start <= t < end, max pitch.
    # Notes of one pitch never overlap, so sort by pitch descending and take the first cover.
    top = np.full(len(onset_steps), -1, np.int64)
    for p, s, e, _ in notes[np.argsort(-notes[:, 0], kind="stable")]:
        lo, hi = np.searchsorted(onset_steps, [s, e])  # onset steps in [s, e)
        free = top[lo:hi] < 0
        top[lo:hi][free] = p
    struck = np.zeros(len(onset_steps), bool)  # the top pitch starts a note at that step
    starts = {(int(p), int(s)) for p, s in notes[:, :2]}
    struck[:] = [(int(p), int(t)) in starts for p, t in zip(top, onset_steps)]
    new = np.ones(len(onset_steps), bool)
    new[1:] = (top[1:] != top[:-1]) | struck[1:]
    return np.stack([top[new], onset_steps[new]], axis=1)


def melody_motion(piece: Piece) -> tuple[float, float]:
    """(step share, mean leap) of the piece's top voice (`top_voice`).

    Over consecutive top-voice notes (M - 1 pairs for M notes): step share = the fraction of
    pairs whose pitches differ by at most 2 semitones (repeated pitches count as steps); mean
    leap = the mean absolute pitch interval in semitones (0 for a repeat). Both NaN with fewer
    than 2 top-voice notes. Pass the melody track alone to measure the melody itself."""
    voice = top_voice(piece)
    if len(voice) < 2:
        return math.nan, math.nan
    leaps = np.abs(np.diff(voice[:, 0]))
    return float(np.mean(leaps <= STEP_SEMITONES)), float(leaps.mean())


def bar_cells(piece: Piece) -> np.ndarray:
    """(B, 128 * longest bar) bool: bar b's cells, (pitch, onset step within the bar), True
    where a note of that pitch starts on that step of the bar (steps counted from the bar's own
    start on the piece's grid: the 16th grid at 4 steps per beat). Bars of different lengths
    simply hold different cells; nothing is stretched or padded into the other bar."""
    width = int(piece.bar_lengths.max()) if piece.num_bars else 1
    cells = np.zeros((piece.num_bars, 128 * width), bool)
    if len(piece.notes):
        starts = piece.notes[:, 1]
        bar = piece.bar_of_step(starts)
        cells[bar, piece.notes[:, 0] * width + (starts - piece.bar_starts[bar])] = True
    return cells


def bar_jaccard(piece: Piece) -> np.ndarray:
    """(B, B) Jaccard similarity |A & B| / |A | B| of every pair of bars' cell sets (`bar_cells`);
    NaN where both bars are empty (no onsets)."""
    cells = bar_cells(piece).astype(np.float32)
    inter = cells @ cells.T
    size = cells.sum(axis=1)
    union = size[:, None] + size[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), np.nan).astype(np.float64)


def bar_repetition(piece: Piece) -> tuple[float, float]:
    """(repeated-bar rate, mean best bar similarity), from `bar_jaccard`.

    Only bars with at least one onset take part, as bars and as partners (silence repeating is
    no repeat). For each such bar, its best similarity is the largest Jaccard with another such
    bar at least 2 bars away (|i - j| >= 2: a bar and its neighbour are not compared).
    Repeated-bar rate = the fraction of those bars whose best similarity is >= 0.7 (a near copy:
    verse, chorus or riff repetition); mean best bar similarity = the mean of the best
    similarities. Both over the bars that have a partner at all; NaN when none has."""
    B = piece.num_bars
    if B < MIN_BAR_DISTANCE + 1 or len(piece.notes) == 0:
        return math.nan, math.nan
    sim = bar_jaccard(piece)
    busy = np.zeros(B, bool)
    busy[np.unique(piece.bar_of_step(piece.notes[:, 1]))] = True
    idx = np.arange(B)
    far = np.abs(idx[:, None] - idx[None, :]) >= MIN_BAR_DISTANCE
    ok = far & busy[:, None] & busy[None, :]
    has = ok.any(axis=1)
    if not has.any():
        return math.nan, math.nan
    best = np.where(ok, np.nan_to_num(sim, nan=0.0), -1.0).max(axis=1)[has]
    return float(np.mean(best >= NEAR_COPY_JACCARD)), float(best.mean())


# --------------------------------------------------------------------------- per-bar features, Frechet
ONSET_SLOTS = 16  # a bar's onset pattern: 16 equal slots (the 16th grid of a 4/4 bar at 4 steps per beat)
FEATURE_NAMES = (
    [f"pc_{k}" for k in range(12)]
    + [f"onset_{k}" for k in range(ONSET_SLOTS)]
    + ["onsets_per_step", "mean_pitch_oct", "lowest_pitch_oct", "range_oct", "polyphony"]
)
FRECHET_RIDGE = 1e-6  # added to each covariance's diagonal before the matrix square root


def bar_features(piece: Piece) -> np.ndarray:
    """(n, 33) float64 per-bar feature vectors, one row per bar with at least one onset (bars
    without onsets are left out). Components, in `FEATURE_NAMES` order, and their scale:

    - pc_0 .. pc_11 (12): the share of the bar's onsets (notes starting in it) on each pitch
      class, C = 0; they sum to 1.
    - onset_0 .. onset_15 (16): the onset pattern, 1 where at least one note starts in that
      sixteenth of the bar (slot = 16 * step within the bar // bar length: exactly the 16th
      grid for 4/4 at 4 steps per beat), else 0.
    - onsets_per_step (1): onsets in the bar / bar length in steps (`Piece.bar_density`; a
      4/4 bar with one onset per 16th has 1.0).
    - mean_pitch_oct, lowest_pitch_oct (2): the mean and the lowest pitch of the bar's onsets,
      in octaves (MIDI pitch / 12; middle C = 5.0).
    - range_oct (1): highest minus lowest onset pitch, in octaves.
    - polyphony (1): the mean number of sounding pitches over the bar's steps where something
      sounds (notes held into the bar count), in pitches.
    """
    notes = piece.notes
    rows = []
    if len(notes) == 0:
        return np.zeros((0, len(FEATURE_NAMES)))
    bar = piece.bar_of_step(notes[:, 1])
    sounding = _covered(notes[:, 1], notes[:, 2], piece.num_steps)
    for b in np.unique(bar):
        n = notes[bar == b]
        s0, length = int(piece.bar_starts[b]), int(piece.bar_lengths[b])
        pitch = n[:, 0]
        pc = np.bincount(pitch % 12, minlength=12) / len(n)
        onset = np.zeros(ONSET_SLOTS)
        onset[(ONSET_SLOTS * (n[:, 1] - s0)) // length] = 1.0
        here = sounding[s0 : s0 + length]
        poly = here.sum() / max(np.count_nonzero(here), 1)
        rows.append(np.concatenate([pc, onset, [
            len(n) / length, pitch.mean() / 12, pitch.min() / 12, (pitch.max() - pitch.min()) / 12, poly,
        ]]))
    return np.asarray(rows, np.float64)


def bar_onset_patterns(pieces, bar_length: int = ONSET_SLOTS) -> np.ndarray:
    """(n, 16) float64 0/1: the onset pattern (`bar_features`' onset_0 .. onset_15) of every bar
    of `bar_length` steps with an onset, over all the pieces: what the rhythm prior of
    `generate` is fitted to (`sampling.fit_bar_patterns`; 16-step bars, where slot = step)."""
    first = FEATURE_NAMES.index("onset_0")
    rows = []
    for piece in pieces:
        if len(piece.notes) == 0:
            continue
        bars = np.unique(piece.bar_of_step(piece.notes[:, 1]))  # the bars of `bar_features`' rows, in order
        keep = piece.bar_lengths[bars] == bar_length
        rows.append(bar_features(piece)[keep, first : first + ONSET_SLOTS])
    return np.concatenate(rows) if rows else np.zeros((0, ONSET_SLOTS))


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix by eigen-decomposition (negative
    round-off eigenvalues clipped to 0)."""
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(a: np.ndarray, b: np.ndarray, ridge: float = FRECHET_RIDGE) -> float:
    """Frechet distance between Gaussians fitted to two sets of feature vectors (rows):
    ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)), S the covariance (ddof=1).

    Numerics: `ridge` * I is added to both covariances (the pitch-class shares sum to 1, so the
    covariances are singular); Tr((S_a S_b)^(1/2)) is computed as Tr((R S_b R)^(1/2)) with
    R = S_a^(1/2), both square roots of symmetric PSD matrices by eigen-decomposition (no scipy);
    the result is clipped at 0. NaN if either set has fewer than 2 rows."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or len(b) < 2:
        return math.nan
    eye = ridge * np.eye(a.shape[1])
    sa, sb = np.cov(a, rowvar=False) + eye, np.cov(b, rowvar=False) + eye
    r = _sqrt_psd(sa)
    cross = np.trace(_sqrt_psd(r @ sb @ r))
    d = float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(sa) + np.trace(sb) - 2 * cross)
    return max(0.0, d)


def frechet_terms(a: np.ndarray, b: np.ndarray) -> list[dict]:
    """Which features make a per-bar feature Frechet distance: for each column of two sets of
    feature vectors (rows; `bar_features` order, named by `FEATURE_NAMES`), the one-feature
    Frechet distance (mu_a - mu_b)^2 + (s_a - s_b)^2 (s the standard deviation, ddof=1, as
    `frechet_distance` for a single column), with both means and deviations; sorted largest
    first. Their sum is the distance of Gaussians with diagonal covariances: the full figure
    adds what the features' correlations contribute. Empty when either set has < 2 rows."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or len(b) < 2:
        return []
    ma, mb, sa, sb = a.mean(0), b.mean(0), a.std(0, ddof=1), b.std(0, ddof=1)
    terms = (ma - mb) ** 2 + (sa - sb) ** 2
    names = FEATURE_NAMES if a.shape[1] == len(FEATURE_NAMES) else [f"feature_{k}" for k in range(a.shape[1])]
    rows = [dict(feature=names[k], term=float(terms[k]), mean=float(ma[k]), std=float(sa[k]),
                 reference_mean=float(mb[k]), reference_std=float(sb[k])) for k in range(a.shape[1])]
    return sorted(rows, key=lambda r: -r["term"])


def pooled_bar_features(pieces) -> np.ndarray:
    """(n, 33) the `bar_features` of every bar with an onset of every piece, one set."""
    rows = [bar_features(p) for p in pieces]
    return np.concatenate(rows) if rows else np.zeros((0, len(FEATURE_NAMES)))


def feature_frechet_distance(pieces, reference) -> float:
    """Per-bar feature Frechet distance of a set of pieces to a reference set: every bar with an
    onset of every piece is one sample (`pooled_bar_features`), then `frechet_distance`.
    A set-level figure (there is no per-piece value)."""
    return frechet_distance(pooled_bar_features(pieces), pooled_bar_features(reference))


def first_bars(piece: Piece, n_bars: int, time_signature=(4, 4)) -> tuple[int, Piece] | None:
    """The first run of `n_bars` consecutive bars in `time_signature` (default 4/4: a song's
    4/4 section, skipping a pickup or other metres before it), as (index of its first bar,
    `piece.crop_bars` of it); None if the piece has no such run."""
    ok = np.all(piece.time_signatures == np.asarray(time_signature), axis=1)
    for first in range(piece.num_bars - n_bars + 1):
        if ok[first : first + n_bars].all():
            return first, piece.crop_bars(first, first + n_bars)
    return None


# --------------------------------------------------------------------------- per piece, per set
def evaluate_piece(piece: Piece, melody: Piece | None = None) -> dict[str, float]:
    """All musical metrics of one piece (keys: `METRIC_KEYS`), plus its note and bar counts.

    `melody`: the piece's melody track as its own `Piece` (e.g. the MELODY entry of
    `read_midi_tracks`); the melody metrics are taken on its top voice (its notes, if it is
    monophonic). Without it they are taken on the top voice of `piece` itself."""
    step_share, mean_leap = melody_motion(melody if melody is not None else piece)
    rate, similarity = bar_repetition(piece)
    return {
        "pitch_entropy": pitch_entropy(piece),
        "pitch_class_entropy": pitch_class_entropy(piece),
        "scale_consistency": scale_consistency(piece),
        "groove_consistency": groove_consistency(piece),
        "polyphony": polyphony(piece),
        "empty_beat_rate": empty_beat_rate(piece),
        "melody_step_share": step_share,
        "melody_mean_leap": mean_leap,
        "repeated_bar_rate": rate,
        "bar_similarity": similarity,
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


# --------------------------------------------------------------------------- chord tones
def strong_beat_steps(piece: Piece) -> np.ndarray:
    """The piece's strong-beat steps, sorted: in a 4/4 bar beats 1 and 3 (the bar's first step
    and the step 2 quarter notes later); in a bar of any other metre its first step only."""
    starts = piece.bar_starts[:-1]
    four = np.all(piece.time_signatures == (4, 4), axis=1)
    third = starts[four] + 2 * piece.steps_per_beat
    return np.unique(np.concatenate([starts, third]))


def _beat_chords(chords) -> list:
    """Per-beat chords as (n_beats, 3) int rows (root, quality id, bass), or as a sequence of
    (root, quality name or id, bass) -> one pitch-class set per beat (empty: no chord)."""
    from .structure import QUALITY_ID, chord_pitch_classes

    rows = []
    for root, quality, bass in chords if not isinstance(chords, np.ndarray) else chords.reshape(-1, 3).tolist():
        if isinstance(quality, str) and quality != "N":
            if quality not in QUALITY_ID:
                raise InputError(f"chord_tone_share: unknown chord quality {quality!r}")
        rows.append(chord_pitch_classes(int(root), quality, int(bass)))
    return rows


def chord_tone_share(piece: Piece, chords, melody=None) -> float:
    """Chord-tone share of melody notes on strong beats (fraction, 0-1).

    The melody: `melody` when given, as a `Piece` (its `top_voice`, i.e. its notes if it is
    monophonic) or as notes (rows starting pitch, start step) on the piece's grid; else the top
    voice of `piece`. The chords: one per beat, beat i being the quarter note of steps
    i * steps_per_beat .. (i + 1) * steps_per_beat - 1 of the piece's grid (as
    `structure.Alignment.beat_root / beat_quality / beat_bass`), each (root pitch class,
    quality, bass pitch class) with the quality a name in `structure.QUALITIES` or its index;
    root < 0 (or quality "N" / index < 0) means no chord. Give an (n_beats, 3) int array or a
    sequence of triples.

    Counted: the melody notes that start exactly on a strong beat (`strong_beat_steps`: beats
    1 and 3 of a 4/4 bar; the first beat of a bar in any other metre) of a beat that has a
    chord (notes on N or past the chords are left out). Share = the fraction of those whose
    pitch class is one of the chord's pitch classes (`structure.chord_pitch_classes`: the
    quality's tones above the root, plus the bass). NaN when no note is counted."""
    if melody is None:
        notes = top_voice(piece)
    elif isinstance(melody, Piece):
        notes = top_voice(melody)
    else:
        notes = np.asarray(melody, np.int64)
        notes = notes.reshape(len(notes), -1)[:, :2] if notes.size else np.zeros((0, 2), np.int64)
    pcs = _beat_chords(chords)
    if len(notes) == 0 or not pcs:
        return math.nan
    strong = strong_beat_steps(piece)
    on = np.isin(notes[:, 1], strong)
    hits = total = 0
    for pitch, start in notes[on]:
        beat = int(start) // piece.steps_per_beat
        if beat >= len(pcs) or not pcs[beat]:
            continue
        total += 1
        hits += int(pitch) % 12 in pcs[beat]
    return hits / total if total else math.nan


# --------------------------------------------------------------------------- chord recognition
MINOR_QUALITIES = frozenset({"min", "min7", "min6", "dim", "dim7", "hdim7"})  # reduce to "min"; the rest to "maj"
BASS_EXTRA = 1.0  # the bass note's steps in a beat count 1 + this many times (x2)
OUTSIDE_PENALTY = 0.5  # each step of weight on a pitch class outside the triad costs this much
# (24, 12) triad templates: row k < 12 the major triad on root k (k, k+4, k+7), 12 + k the minor (k, k+3, k+7)
TRIADS = np.zeros((24, 12), bool)
for _r in range(12):
    TRIADS[_r, [_r, (_r + 4) % 12, (_r + 7) % 12]] = True
    TRIADS[12 + _r, [_r, (_r + 3) % 12, (_r + 7) % 12]] = True
del _r


def beat_pitch_class_weights(piece: Piece) -> tuple[np.ndarray, np.ndarray]:
    """Per beat (quarter note; beat i = steps i * spb .. (i + 1) * spb - 1, ceil(num_steps / spb)
    beats): (n_beats, 12) float64 weights, the number of steps each pitch class sounds in the
    beat summed over notes (a note sounds on steps start .. end - 1; two octaves of one pitch
    class both count), the bass counted twice: the lowest pitch sounding anywhere in the beat
    adds its steps in the beat once more (`BASS_EXTRA`); and (n_beats,) int64 the bass pitch
    (-1 for a beat where nothing sounds)."""
    spb = piece.steps_per_beat
    n_beats = -(-piece.num_steps // spb)
    sounding = np.zeros((n_beats * spb, 128), np.int64)  # (T', 128) steps padded to whole beats
    for p, s, e, _ in piece.notes:
        sounding[s:e, p] += 1
    per_pitch = sounding.reshape(n_beats, spb, 128).sum(axis=1)  # (n_beats, 128) steps sounding
    weights = np.zeros((n_beats, 12))
    for pc in range(12):
        weights[:, pc] = per_pitch[:, pc::12].sum(axis=1)
    busy = per_pitch.any(axis=1)
    bass = np.where(busy, np.argmax(per_pitch > 0, axis=1), -1)  # lowest pitch with weight
    rows = np.flatnonzero(busy)
    weights[rows, bass[rows] % 12] += BASS_EXTRA * per_pitch[rows, bass[rows]]
    return weights, bass


def recognise_chords(piece: Piece, steps_per_beat: int | None = None) -> list:
    """The chord of each beat as (root pitch class, "maj" | "min"), None for a beat where no
    note sounds; one entry per beat i (steps i * spb .. (i + 1) * spb - 1 of the piece's grid,
    ceil(num_steps / spb) beats, as `structure.Alignment.beat_root`).

    The rule, a template match over the 24 major and minor triads:
      1. weights (`beat_pitch_class_weights`): w[pc] = the steps pitch class pc sounds in the
         beat, summed over the notes sounding there; the bass (the lowest pitch sounding in
         the beat) adds its own steps once more (counted x2);
      2. score of a triad T (major: root, +4, +7; minor: root, +3, +7) =
         sum of w over T's three pitch classes - 0.5 * sum of w over the other nine;
      3. the highest score wins; ties go, in order, to the triad whose root is the bass's
         pitch class, then the one with the larger w[root], then major before minor, then the
         lower root (0 = C).
    Since the penalty is proportional to the weight outside the triad, ranking by score equals
    ranking by weight inside the triad. The bass is what settles a four-note beat such as
    C-E-G-A: an A bass counted twice makes A minor outweigh C major; a C bass, in both triads,
    leaves them tied and the tie goes to C major, whose root it is.

    `steps_per_beat`: must equal the piece's own (the default); kept for callers that state it."""
    spb = piece.steps_per_beat
    if steps_per_beat is not None and int(steps_per_beat) != spb:
        raise InputError(f"recognise_chords: steps_per_beat {steps_per_beat} but the piece has {spb} steps per beat")
    weights, bass = beat_pitch_class_weights(piece)
    inside = weights @ TRIADS.T.astype(np.float64)  # (n_beats, 24)
    score = inside - OUTSIDE_PENALTY * (weights.sum(axis=1, keepdims=True) - inside)
    roots = np.arange(24) % 12
    out = []
    for b in range(len(weights)):
        if bass[b] < 0:
            out.append(None)
            continue
        # lexicographic: score, root is the bass, weight of the root, major first, lower root
        best = min(range(24), key=lambda k: (-score[b, k], roots[k] != bass[b] % 12, -weights[b, roots[k]],
                                             k >= 12, roots[k]))
        out.append((int(roots[best]), "maj" if best < 12 else "min"))
    return out


def reduce_quality(quality) -> str | None:
    """A chord quality (a name in `structure.QUALITIES` or its index) -> "min" for min, min7,
    min6, dim, dim7, hdim7; "maj" for the others (maj, 7, maj7, aug, sus2, sus4, sus4(b7), maj6:
    a sus chord, which has no third, counts as major); None for no chord (None, "N", index < 0)."""
    from .structure import QUALITIES, QUALITY_ID

    if quality is None or quality == "N":
        return None
    if isinstance(quality, (int, np.integer)):
        if int(quality) < 0:
            return None
        quality = QUALITIES[int(quality)]
    if quality not in QUALITY_ID:
        raise InputError(f"unknown chord quality {quality!r} (known: {', '.join(QUALITIES)} or 'N')")
    return "min" if quality in MINOR_QUALITIES else "maj"


def chord_adherence(piece: Piece, requested_per_beat) -> dict[str, float]:
    """How often the piece sounds the chord asked for, beat by beat.

    `requested_per_beat`: one entry per beat (beat i as in `recognise_chords`), each None (no
    chord asked) or a tuple (root pitch class, quality, ...) with the quality a name in
    `structure.QUALITIES`, its index, or "N" / None (no chord); root < 0 also means no chord;
    more items (a bass) are ignored. The quality is reduced to major / minor (`reduce_quality`).
    Returns {"chord_match": of the beats asked a chord, the share where `recognise_chords`
    gives the same (root, maj/min) (a silent beat, or a beat past the piece's end, is a miss);
    NaN when no beat asks a chord, "n_beats": the beats asked a chord}."""
    recognised = recognise_chords(piece)
    hits = n = 0
    for b, chord in enumerate(requested_per_beat):
        if chord is None:
            continue
        root, quality = int(chord[0]), reduce_quality(chord[1])
        if root < 0 or quality is None:
            continue
        n += 1
        hits += b < len(recognised) and recognised[b] == (root % 12, quality)
    return {"chord_match": hits / n if n else math.nan, "n_beats": n}


# --------------------------------------------------------------------------- form adherence
def form_adherence(piece: Piece, form) -> dict[str, float]:
    """Are bars of repeated phrases alike, and bars of different phrases less so?

    `form`: a form string ("i4A8B8A8B8o4", `structure.parse_form`), parsed phrases, or per-bar
    labels (`structure.BarLabels`, or anything with `letter`, `phrase` and `position` per bar,
    as a dataset row's bar_letter / bar_phrase / bar_phrase_position: bars with letter "" or
    phrase < 0 are unlabelled and left out), covering exactly the piece's bars.

    Pairs compared: every two bars at the same position (0-based bar within the phrase) of two
    different phrases, of equal length in steps, at least one with an onset. A pair is "same
    letter" when both phrases have one letter other than X / x (letters that recur: x and X mark
    material that does not), "different letter" when their letters differ (any letters; pairs
    of X with X or x with x are left out). Each pair's similarity is `bar_jaccard` (cells:
    pitch x onset step in the bar, `bar_cells`).
    Returns {"same_letter_jaccard", "different_letter_jaccard": the mean over each kind of pair
    (NaN without one), "ratio": same / different (NaN when either is NaN or different is 0),
    "n_same", "n_different": pairs counted}. InputError if the form's bars differ from the
    piece's."""
    from .structure import bar_labels, parse_form

    if hasattr(form, "letter"):
        labels = form
    else:
        labels = bar_labels(parse_form(form) if isinstance(form, str) else list(form))
    if len(labels.letter) != piece.num_bars:
        raise InputError(f"form_adherence: the form has {len(labels.letter)} bars, the piece {piece.num_bars}")
    sim = bar_jaccard(piece)
    lengths = piece.bar_lengths
    phrase, position = np.asarray(labels.phrase), np.asarray(labels.position)
    labelled = [b for b in range(len(labels.letter)) if labels.letter[b] and phrase[b] >= 0]
    same, different = [], []
    for n, i in enumerate(labelled):
        for j in labelled[n + 1:]:
            if (phrase[i] == phrase[j] or position[i] != position[j]
                    or lengths[i] != lengths[j] or np.isnan(sim[i, j])):
                continue
            if labels.letter[i] != labels.letter[j]:
                different.append(sim[i, j])
            elif labels.letter[i] not in ("X", "x"):
                same.append(sim[i, j])
    s = float(np.mean(same)) if same else math.nan
    d = float(np.mean(different)) if different else math.nan
    ratio = s / d if not (math.isnan(s) or math.isnan(d)) and d > 0 else math.nan
    return {"same_letter_jaccard": s, "different_letter_jaccard": d, "ratio": ratio,
            "n_same": len(same), "n_different": len(different)}
