"""A song's form, as POP909's phrase annotations write it ("i4A8B8A8B8o4"): parsing, the
per-bar view, and what the model reads of it (`form_features`) and does with it
(`repeat_sources`, `fit_form`).

This file travels with Hub checkpoints for `trust_remote_code`: it imports only numpy and
its sibling files, so `generate` draws and follows forms without the package.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .tokens_fractalmidi import FORM_KINDS, MAX_FORM_POSITION  # noqa: F401 (the model's form inputs)

MAX_FORM_BARS = 1024
MAX_PHRASE_BARS = 128  # the corpus has one phrase of 86 bars (song 062)


class FormError(ValueError):
    """A bad form string (the package's `errors.InputError` is one too: see `structure.parse_form`)."""


@dataclass(frozen=True)
class Phrase:
    letter: str  # "i", "A", "b", "X", "o" ...
    bars: int

    @property
    def melodic(self) -> bool:
        return self.letter.isupper()


def parse_form(text: str, where: str = "form") -> list[Phrase]:
    """`"i4A4B8A4b4o3"` -> phrases (letter, bars). Upper-case letters are melodic phrases.

    Raises FormError naming the bad part: anything but letter+bars pairs, a phrase of 0 or
    more than MAX_PHRASE_BARS bars, more than MAX_FORM_BARS bars in all."""
    if not isinstance(text, str):
        raise FormError(f"{where}: expected a form string like 'i4A8B8o4', got {type(text).__name__}")
    s = text.strip()
    if not s:
        raise FormError(f"{where}: empty form string (expected phrases like 'i4A8B8o4')")
    if len(s) > 8 * MAX_FORM_BARS:
        raise FormError(f"{where}: form string of {len(s)} characters is too long")
    phrases, total, pos = [], 0, 0
    for m in re.finditer(r"([A-Za-z])(\d+)|(.)", s):
        if m.group(3) is not None or m.start() != pos:
            bad = s[m.start(): m.start() + 8]
            raise FormError(
                f"{where}: bad part {bad!r} at character {m.start() + 1} of {s[:40]!r}: "
                f"expected a letter followed by a number of bars (e.g. 'A8')"
            )
        pos = m.end()
        letter, bars = m.group(1), int(m.group(2))
        if not 1 <= bars <= MAX_PHRASE_BARS:
            raise FormError(
                f"{where}: phrase {m.group(0)!r} at character {m.start() + 1} has {bars} bars, "
                f"allowed 1-{MAX_PHRASE_BARS}"
            )
        total += bars
        if total > MAX_FORM_BARS:
            raise FormError(f"{where}: more than {MAX_FORM_BARS} bars in all (at phrase {m.group(0)!r})")
        phrases.append(Phrase(letter, bars))
    if pos != len(s):  # a letter with no number at the end
        raise FormError(f"{where}: bad part {s[pos:pos + 8]!r} at the end of {s[:40]!r}: expected a letter followed by a number of bars")
    return phrases


def form_string(phrases) -> str:
    return "".join(f"{p.letter}{p.bars}" for p in phrases)


REPEATING = set("ABCDEFGHIJKLMNOPQRSTUVWYZabcdefghjklmnpqrstuvwyz")  # letters whose phrases recur


def form_kind(letter: str) -> int:
    """A phrase letter's index in `FORM_KINDS` ("" = unknown)."""
    if not letter:
        return 0
    if letter in ("i", "I"):
        return 1
    if letter in ("o", "O"):
        return 2
    if letter == "X":
        return 5
    if letter == "x":
        return 6
    return 3 if letter.isupper() else 4


def form_features(letters, phrase, position, length) -> np.ndarray:
    """Per bar (B,) of a form (letters "" where unknown; phrase index, position in the phrase,
    bars in the phrase, -1 / 0 where unknown) -> (B, 4) int64: kind (`FORM_KINDS`), position in
    the phrase + 1, bars left in the phrase after this one + 1 (both capped at
    MAX_FORM_POSITION; 0 unknown), occurrence (0 unknown, 1 the letter's first phrase, 2 a later
    phrase of the same letter)."""
    B = len(letters)
    out = np.zeros((B, 4), np.int64)
    first_phrase: dict[str, int] = {}
    for b in range(B):
        if letters[b] and phrase[b] >= 0:
            first_phrase.setdefault(letters[b], int(phrase[b]))
            first_phrase[letters[b]] = min(first_phrase[letters[b]], int(phrase[b]))
    for b in range(B):
        letter = letters[b]
        if not letter or phrase[b] < 0 or position[b] < 0 or length[b] <= 0:
            continue
        out[b, 0] = form_kind(letter)
        out[b, 1] = 1 + min(int(position[b]), MAX_FORM_POSITION - 1)
        out[b, 2] = 1 + min(max(int(length[b]) - int(position[b]) - 1, 0), MAX_FORM_POSITION - 1)
        out[b, 3] = 1 if int(phrase[b]) == first_phrase[letter] else 2
    return out


def repeat_sources(letters, phrase, position, bar_lengths) -> np.ndarray:
    """Which earlier bar each bar repeats (B,) int64 (itself where none): a bar of a later phrase
    of a recurring letter (`REPEATING`: not X / x, i / o only when they recur) repeats the bar
    at its position in the letter's first phrase, when that bar exists and has the same length
    in steps."""
    B = len(letters)
    src = np.arange(B, dtype=np.int64)
    first: dict[tuple[str, int], int] = {}  # (letter, position) -> bar of the first phrase
    first_phrase: dict[str, int] = {}
    for b in range(B):
        letter = letters[b]
        if not letter or phrase[b] < 0 or (letter not in REPEATING and letter not in "iIoO"):
            continue
        k = first_phrase.setdefault(letter, int(phrase[b]))
        if int(phrase[b]) == k:
            first[(letter, int(position[b]))] = b
            continue
        s = first.get((letter, int(position[b])))
        if s is not None and int(bar_lengths[s]) == int(bar_lengths[b]):
            src[b] = s
    return src


def fit_form(phrases, num_bars: int) -> list:
    """A form stretched or cut to `num_bars` bars: phrases in order up to the last that fits
    (the last cut short), and when the form is shorter, its phrases after the intro and before
    the outro repeated (the last repeat cut short) and the outro kept at the end."""
    phrases = list(phrases)
    if not phrases:
        return []
    total = sum(p.bars for p in phrases)
    if total < num_bars:
        body = [p for p in phrases if p.letter not in ("i", "o")] or phrases
        head = [p for p in phrases[:1] if p.letter == "i"]
        tail = [p for p in phrases[-1:] if p.letter == "o"]
        room = num_bars - sum(p.bars for p in head + tail)
        middle, n = [], 0
        while n < room:
            for p in body:
                middle.append(p)
                n += p.bars
                if n >= room:
                    break
        over = n - room  # the last phrase of the body is cut so that the outro ends the piece
        if over:
            middle[-1] = Phrase(middle[-1].letter, middle[-1].bars - over)
        phrases = head + middle + tail
    out, n = [], 0
    for p in phrases:
        if n >= num_bars:
            break
        take = min(p.bars, num_bars - n)
        out.append(Phrase(p.letter, take))
        n += take
    return out


@dataclass
class BarLabels:
    """Per-bar view of a form: one entry per bar, in order."""

    letter: list[str]
    phrase: np.ndarray  # (B,) index of the bar's phrase
    position: np.ndarray  # (B,) bar's position in its phrase, 0-based
    length: np.ndarray  # (B,) bars in its phrase
    melodic: np.ndarray  # (B,) bool

    def __len__(self) -> int:
        return len(self.letter)


def bar_labels(phrases) -> BarLabels:
    letter, phrase, position, length, melodic = [], [], [], [], []
    for k, p in enumerate(phrases):
        for j in range(p.bars):
            letter.append(p.letter)
            phrase.append(k)
            position.append(j)
            length.append(p.bars)
            melodic.append(p.melodic)
    return BarLabels(letter, np.array(phrase, np.int64), np.array(position, np.int64),
                     np.array(length, np.int64), np.array(melodic, bool))




# Krumhansl and Kessler's key profiles (probe-tone ratings, 1982), tonic first
KEY_PROFILE_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KEY_PROFILE_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


def estimate_key(pitch_class_weights) -> tuple[int, str] | None:
    """The key whose profile best correlates with (12,) pitch-class weights (C = 0; e.g. the
    beats each given chord's tones last, plus the steps each given melody note sounds), as
    (tonic 0-11, "maj" | "min"): the Krumhansl-Schmuckler rule over the 24 rotations of
    `KEY_PROFILE_MAJOR` / `KEY_PROFILE_MINOR`; ties go to major, then the lower tonic. None
    when the weights are all equal (nothing to go by)."""
    w = np.asarray(pitch_class_weights, np.float64).reshape(12)
    if not np.isfinite(w).all() or np.ptp(w) == 0:
        return None
    best, key = -np.inf, None
    for mode, profile in (("maj", KEY_PROFILE_MAJOR), ("min", KEY_PROFILE_MINOR)):
        for tonic in range(12):
            r = float(np.corrcoef(w, np.roll(profile, tonic))[0, 1])
            if r > best + 1e-12:
                best, key = r, (tonic, mode)
    return key
