"""The allowed range of every generation argument: one home for `generate` and for every
front-end (command line, web app, OSC), so all of them refuse the same values with the same
message.

This file travels with Hub checkpoints for `trust_remote_code`: it imports nothing.

Ranges are inclusive unless a name says otherwise. Model-dependent limits (the density a model
can represent, `density_max`; its `max_bars`, `max_bar_len` and level count) come from the
model's config and are passed in.
"""

from __future__ import annotations

import math
import operator

TEMPERATURE = (0.1, 2.0)  # softmax temperature
TOP_P = (0.0, 1.0)  # nucleus mass, 0 excluded, 1 = off
GUIDANCE_SCALE = (0.0, 10.0)  # classifier-free guidance; 1 = none
ITERATIONS = (1, 64)  # decoding iterations of one level
REFINE_RATIO = (0.0, 1.0)  # fraction re-masked per refinement round
REFINE_ROUNDS = (0, 8)  # refinement rounds per content level
TEMPERATURE_SCALE = (0.25, 4.0)  # a level's factor on the temperature (its product stays in TEMPERATURE)
CHORD_GAIN = (0.0, 8.0)  # onset logit offset towards given chords' tones
MELODY_GAIN = (0.0, 8.0)  # onset logit offset against accompaniment above the melody
SUSTAIN = (-4.0, 4.0)  # logit offset of the held state where notes go on or end
RHYTHM_PRIOR = (0.0, 2.0)  # strength of the bar-pattern prior on the rhythm level (0: off)
RHYTHM_REPEAT = (0.0, 1.0)  # chance that a bar's rhythm repeats the bar before it in its phrase
VARIATION = (0.0, 1.0)  # share of a repeat's tokens re-sampled on their own per refinement round
NUM_SAMPLES = (1, 64)  # pieces per call
SEED = (0, 2**63 - 1)  # what torch.Generator.manual_seed takes as a non-negative integer
TEMPO_BPM = (10.0, 1000.0)  # a bar's tempo, as MIDI reading also accepts
TIME_SIGNATURE_NUMERATOR = (1, 32)
TIME_SIGNATURE_DENOMINATORS = (1, 2, 4, 8, 16, 32)


def _fmt(x) -> str:
    if isinstance(x, int) and not isinstance(x, bool) and x.bit_length() > 256:  # str() fails past 4300 digits
        return f"{'-' if x < 0 else ''}(an integer of about {int(x.bit_length() * 0.30103)} digits)"
    if not isinstance(x, float):
        return str(x)
    text = f"{x:g}"
    return text + ".0" if text.lstrip("-").isdigit() else text  # 2.0, not 2


def _shown(value) -> str:
    """A user's value for a message: numbers as numbers, anything else as repr, cut short."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _fmt(value)
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_number(name: str, value, bounds, *, integer: bool = False, low_open: bool = False, unit: str = ""):
    """`value` as a float (or an int with `integer`) if it is a finite number within `bounds`;
    else a ValueError that names `name`, the value and the allowed range."""
    lo, hi = bounds
    allowed = f"{'(' if low_open else ''}{_fmt(lo)}{', ' if low_open else '-'}{_fmt(hi)}{']' if low_open else ''}"
    allowed += f" {unit}" if unit else ""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{name} must be a {'whole ' if integer else ''}number in {allowed}, got {_shown(value)}")
    if integer:
        if isinstance(value, float) and math.isfinite(value) and value == int(value):
            value = int(value)
        try:
            value = operator.index(value)  # ints and numpy ints; not floats, strings or None
        except TypeError:
            raise ValueError(f"{name} must be a whole number in {allowed}, got {_shown(value)}") from None
    else:
        try:
            value = float(value)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"{name} must be a number in {allowed}, got {_shown(value)}") from None
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number in {allowed}, got {_shown(value)}")
    ok = (lo < value if low_open else lo <= value) and value <= hi
    if not ok:
        raise ValueError(f"{name} {_fmt(value)} is outside the allowed range {allowed}")
    return value


def density_range(density_max: float) -> tuple[float, float]:
    """The per-bar density (onsets per step) a model with this `density_max` can represent."""
    return (0.0, float(density_max))


def check_curve_value(what: str, bar: int, value, density_max: float) -> float:
    """One value of a per-bar structure curve ("density" in onsets per step, "tempo" in BPM),
    `bar` counted from 1 for the message."""
    if what == "density":
        return check_number(f"density curve, bar {bar}:", value, density_range(density_max), unit="onsets per step")
    if what == "tempo":
        return check_number(f"tempo curve, bar {bar}:", value, TEMPO_BPM, unit="BPM")
    raise ValueError(f"structure has an unknown curve {what!r} (allowed: 'tempo', 'density')")


def check_time_signature(numerator, denominator, steps_per_beat: int = 4, max_bar_len: int | None = None):
    """(numerator, denominator) if it is a time signature the grid can hold: numerator 1-32,
    denominator a power of two 1-32, a whole number of steps per bar, at most `max_bar_len`."""
    n = check_number("time signature numerator", numerator, TIME_SIGNATURE_NUMERATOR, integer=True)
    if isinstance(denominator, bool) or not isinstance(denominator, int) or denominator not in TIME_SIGNATURE_DENOMINATORS:
        raise ValueError(
            f"time signature {numerator}/{denominator}: the denominator must be one of "
            f"{', '.join(str(d) for d in TIME_SIGNATURE_DENOMINATORS)}"
        )
    steps = n * 4 * steps_per_beat / denominator
    if steps != int(steps):
        raise ValueError(
            f"time signature {n}/{denominator} does not fit the grid of {steps_per_beat} steps per beat "
            f"({steps:g} steps per bar)"
        )
    if max_bar_len is not None and steps > max_bar_len:
        raise ValueError(
            f"time signature {n}/{denominator} has {int(steps)} steps per bar; this model takes up to {max_bar_len}"
        )
    return n, denominator
