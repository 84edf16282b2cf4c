"""The controls the front-ends share: the command line, the web app and the OSC server find and
load their model here, take their decoding defaults from its generation config, and read their
users' text and numbers with the ranges of `limits_fractalmidi` (the same ones `generate`
enforces), so each refuses the same values with the same message.

Every parser raises `InputError` naming the field, the value and the allowed range. Parsing
imports no torch: the command line checks its arguments before it loads a model.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from . import limits_fractalmidi as limits
from .errors import InputError

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "checkpoints" / "fractalmidi-pop909-songs"
MODEL_ENV = "FRACTALMIDI_MODEL"  # overrides the default model folder for every front-end
DECODING_FIELDS = ("temperature", "top_p", "guidance_scale", "num_iterations", "refine_ratio", "refine_rounds",
                   "follow_structure", "follow_form", "variation")
DEFAULT_DENSITY_MAX = 4.0  # FractalMIDIConfig's default density_max (the shipped model's)
MAX_CURVE_FILE_BYTES = 1 << 20  # a .json curve file
MAX_BARS = 1024  # bars per piece from the command line (FractalMIDIConfig's default max_bars)
MAX_INTERACTIVE_BARS = 256  # bars per piece in the web app and over OSC (a CPU takes seconds at 256)


def _err(e: ValueError) -> InputError:
    return InputError(str(e))


# ----------------------------------------------------------------------------- the model
def model_dir(path=None) -> Path:
    """The model folder a front-end uses: `path`, else $FRACTALMIDI_MODEL, else the shipped model."""
    return Path(path or os.environ.get(MODEL_ENV) or DEFAULT_MODEL)


def _json_file(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object")
    return data


def model_limits(path=None) -> dict:
    """What a model folder's config.json says about the arguments its model takes (read as
    JSON, so bad arguments are refused before the weights load): density_max, levels,
    max_bars, max_bar_len, steps_per_beat."""
    folder = model_dir(path)
    config = folder / "config.json"
    if not config.is_file():
        hint = " (the shipped default model is missing: is this a full clone?)" if folder == DEFAULT_MODEL else ""
        raise InputError(f"{folder}: no model there (expected config.json and model.safetensors){hint}")
    c = _json_file(config)
    return dict(density_max=float(c.get("density_max", DEFAULT_DENSITY_MAX)),
                levels=list(c.get("levels", ["structure", "harmony", "notes"])),
                max_bars=int(c.get("max_bars", MAX_BARS)), max_bar_len=int(c.get("max_bar_len", 48)),
                steps_per_beat=int(c.get("steps_per_beat", 4)))


def load_model(path=None):
    """The model of `model_dir(path)`, loaded for generation (`InputError` when the folder holds
    none). Imports torch and transformers."""
    from transformers.utils import logging as hf_logging

    from .modeling_fractalmidi import FractalMIDIModel

    folder = model_dir(path)
    model_limits(folder)  # a missing or broken folder named in one line
    hf_logging.disable_progress_bar()
    return FractalMIDIModel.from_pretrained(folder).eval()


def decoding_defaults(model_or_path=None) -> dict:
    """The decoding defaults the controls start at: a loaded model's generation config, or a
    model folder's (its generation_config.json over its config.json, as `from_pretrained`
    reads them). Keys: DECODING_FIELDS."""
    from .generation_fractalmidi import default_generation_config

    gen = getattr(model_or_path, "generation_config", None)
    if gen is None:
        from .configuration_fractalmidi import FractalMIDIConfig

        folder = model_dir(model_or_path)
        model_limits(folder)
        saved = folder / "generation_config.json"
        gen = default_generation_config(FractalMIDIConfig.from_pretrained(folder),
                                        **(_json_file(saved) if saved.is_file() else {}))
    return {k: getattr(gen, k) for k in DECODING_FIELDS}


def number(name: str, value, bounds, *, integer=False, low_open=False, unit="") -> float | int:
    """A number typed or sent by a user (text, int or float), checked against `bounds`."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            try:  # "8.0" for a whole number
                value = float(text)
            except ValueError:
                kind = "a whole number" if integer else "a number"
                raise InputError(f"{name} must be {kind}, got {limits._shown(text)}") from None
    try:
        return limits.check_number(name, value, bounds, integer=integer, low_open=low_open, unit=unit)
    except ValueError as e:
        raise _err(e) from None


def temperature(value) -> float:
    return number("temperature", value, limits.TEMPERATURE)


def top_p(value) -> float:
    return number("top-p", value, limits.TOP_P, low_open=True)


def guidance_scale(value) -> float:
    return number("cfg (guidance scale)", value, limits.GUIDANCE_SCALE)


def refine_ratio(value) -> float:
    return number("refine ratio", value, limits.REFINE_RATIO)


def variation(value) -> float:
    return number("variation", value, limits.VARIATION)


def chord_gain(value) -> float:
    return number("chord gain", value, limits.CHORD_GAIN)


def melody_gain(value) -> float:
    return number("melody gain", value, limits.MELODY_GAIN)


def sustain(value) -> float:
    return number("sustain", value, limits.SUSTAIN)


def rhythm_repeat(value) -> float:
    return number("rhythm repeat", value, limits.RHYTHM_REPEAT)


def rhythm_prior(value) -> float:
    return number("rhythm prior", value, limits.RHYTHM_PRIOR)


def refine_rounds(value) -> int:
    return number("refine rounds", value, limits.REFINE_ROUNDS, integer=True)


def num_samples(value) -> int:
    return number("number of samples", value, limits.NUM_SAMPLES, integer=True)


def seed(value) -> int:
    return number("seed", value, limits.SEED, integer=True)


def bars(value, max_bars: int = MAX_BARS, name: str = "bars") -> int:
    return number(name, value, (1, max_bars), integer=True)


def iterations(text, num_levels: int | None = None) -> list[int]:
    """'8,8,3': decoding iterations per level, each in limits.ITERATIONS; `num_levels` when
    known (the model's config) must match."""
    parts = list(text) if isinstance(text, (list, tuple)) else [p.strip() for p in str(text).split(",")]
    out = [number(f"iterations, level {i + 1}:", p, limits.ITERATIONS, integer=True) for i, p in enumerate(parts)]
    if num_levels is not None and len(out) != num_levels:
        raise InputError(f"iterations: give one count per level ({num_levels} levels), got {len(out)}: "
                         f"{','.join(str(n) for n in out)}")
    return out


def time_signature(text, steps_per_beat: int = 4, max_bar_len: int | None = None) -> tuple[int, int]:
    """'3/4' -> (3, 4): numerator 1-32, denominator a power of two up to 32, whole steps per bar."""
    try:
        n, d = (int(x) for x in str(text).strip().split("/"))
    except ValueError:
        raise InputError(f"time signature must look like 4/4 or 6/8, got {limits._shown(text)}") from None
    try:
        return limits.check_time_signature(n, d, steps_per_beat, max_bar_len)
    except ValueError as e:
        raise _err(e) from None


def bar_ranges(text, num_bars: int | None = None) -> list[tuple[int, int]]:
    """'16-32,40-48' (bars counted from 1, both ends included) -> [(15, 32), (39, 48)]
    (0-based, half-open); within `num_bars` when given."""
    out = []
    for part in str(text if text is not None else "").split(","):
        a, _, b = part.strip().partition("-")
        try:
            first, last = int(a), int(b or a)
        except ValueError:
            raise InputError(f"bars must look like 16-32,40-48 (bars counted from 1), got {limits._shown(text)}") from None
        if first < 1 or last < first:
            raise InputError(f"bar range {part.strip()}: bars count from 1 and a range must not run backwards")
        if num_bars is not None and last > num_bars:
            raise InputError(f"bars {first}-{last} lie outside the piece's bars 1-{num_bars}")
        out.append((first - 1, last))
    return out


def curve(text, what: str, density_max: float = DEFAULT_DENSITY_MAX) -> list | None:
    """A per-bar curve ("density", onsets per step, 0 to the model's density_max; "tempo", BPM
    in limits.TEMPO_BPM): a comma list ('0.5,,1.0': empty entries are left to the model), a
    list of numbers / None, or the path of a .json file holding such a list."""
    if text is None:
        return None
    if isinstance(text, (list, tuple)):
        values = list(text)
    else:
        path = Path(str(text))
        if path.suffix.lower() == ".json":
            if not path.is_file():
                raise InputError(f"{path}: {what} curve file not found")
            if path.stat().st_size > MAX_CURVE_FILE_BYTES:
                raise InputError(f"{path}: a {what} curve file may hold up to {MAX_CURVE_FILE_BYTES >> 10} KB")
            try:
                values = json.loads(path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise InputError(f"{path}: not valid JSON ({e})") from None
            if not isinstance(values, list):
                raise InputError(f"{path}: a {what} curve must be a JSON list, one value per bar")
        else:
            values = [v.strip() for v in str(text).split(",")]
    if len(values) > MAX_BARS:
        raise InputError(f"the {what} curve has {len(values)} values; a piece has at most {MAX_BARS} bars")
    out = []
    for i, v in enumerate(values):
        if v is None or v == "":
            out.append(None)
            continue
        if isinstance(v, str):
            try:
                v = float(v)
            except ValueError:
                raise InputError(f"{what} curve, bar {i + 1}: {v!r} is not a number") from None
        try:
            out.append(limits.check_curve_value(what, i + 1, v, density_max))
        except ValueError as e:
            raise _err(e) from None
    return out


# ----------------------------------------------------------------------------- form, key, chords
MAX_CHORDS_PER_BAR = 16  # chord symbols in one bar of --chords (a 4/4 bar has 16 sixteenths)
MAX_CONTROL_TEXT = 64 * 1024  # characters of a form, key or chord text
KEY_EXAMPLES = "e.g. G:maj, Eb:min, C#:min, G, Gm, G major, e minor"
_KEY_MODES = {"": "maj", "maj": "maj", "major": "maj", "min": "min", "minor": "min", "m": "min"}


def _text(value, what: str, example: str) -> str:
    if not isinstance(value, str):
        raise InputError(f"{what}: expected text like {example}, got {type(value).__name__}")
    if len(value) > MAX_CONTROL_TEXT:
        raise InputError(f"{what}: {len(value)} characters is too long (at most {MAX_CONTROL_TEXT})")
    return value


def form(text, max_bars: int = MAX_BARS) -> list:
    """A form string, as in the POP909 annotations: `'i4A8B8A8B8o4'` -> phrases
    (`structure.Phrase(letter, bars)`), upper-case letters melodic, the same letter the same
    material; at most `max_bars` bars in all (each phrase 1-`structure.MAX_PHRASE_BARS`).
    Already parsed phrases pass through (checked against `max_bars`)."""
    from .structure import Phrase, parse_form

    if isinstance(text, (list, tuple)) and all(isinstance(p, Phrase) for p in text):
        phrases = list(text)
        if not phrases:
            raise InputError("form: no phrases")
    else:
        phrases = parse_form(_text(text, "form", "'i4A8B8o4'"), "form")
    total = sum(p.bars for p in phrases)
    if total > max_bars:
        raise InputError(f"form: {total} bars in all; a piece has at most {max_bars} bars")
    return phrases


def key(text) -> tuple[int, str, str]:
    """A key -> (tonic pitch class 0-11, mode "maj" or "min", name as in the annotations, e.g.
    "Eb:min"). Accepted: `G:maj`, `Eb:min`, `C#:min` (the annotations' style), `G`, `Gm`,
    `G major`, `e minor`, `Bb maj`, `F#:minor`: a tonic A-G (either case) with # or b, then
    maj / major / min / minor / m (no mode: major). The name keeps the tonic's spelling."""
    from .structure import parse_pitch_class

    s = _text(text, "key", "'G:maj'").strip()
    m = re.fullmatch(r"([A-Ga-g])([#b]?)\s*(?::\s*)?([A-Za-z]*)", s)
    mode = None
    if m:
        word = m.group(3)
        mode = _KEY_MODES.get(word if word in ("m", "M") else word.lower())
        if word == "M":
            mode = "maj"
    if mode is None:
        raise InputError(f"key: {s[:24]!r} is not a key ({KEY_EXAMPLES})")
    tonic = m.group(1).upper() + m.group(2)
    return parse_pitch_class(tonic, "key"), mode, f"{tonic}:{mode}"


def chords(text, max_bars: int = MAX_BARS) -> list[list[tuple[int, str, int]]]:
    """A chord progression, one symbol per bar separated by spaces, several in one bar joined by
    commas: `"C,G Am F G7"` -> per bar a list of (root pitch class, quality, bass pitch class),
    the quality one of `structure.QUALITIES` ("N", root = bass = -1, for no chord). Symbols:
    see `structure.parse_chord_symbol` (`C`, `Am`, `G7`, `F/A`, `F#m7b5`, `C:maj`, `A:min7`,
    `Bb:maj7`, `N` ...). At most `max_bars` bars and MAX_CHORDS_PER_BAR symbols a bar. A bad
    symbol is named with its bar: "chords, bar 3: 'Hm' is not a chord symbol (e.g. ...)"."""
    from .structure import parse_chord_symbol

    s = _text(text, "chords", "'C G Am F'").strip()
    if not s:
        raise InputError("chords: empty (expected chord symbols, one per bar, like 'C G Am F')")
    bars_text = s.split()
    if len(bars_text) > max_bars:
        raise InputError(f"chords: {len(bars_text)} bars; a piece has at most {max_bars} bars")
    out = []
    for b, bar_text in enumerate(bars_text, start=1):
        symbols = bar_text.split(",")
        if len(symbols) > MAX_CHORDS_PER_BAR:
            raise InputError(f"chords, bar {b}: {len(symbols)} chords; at most {MAX_CHORDS_PER_BAR} in one bar")
        bar = []
        for sym in symbols:
            if not sym:
                raise InputError(f"chords, bar {b}: an empty chord in {bar_text[:40]!r} (join a bar's chords "
                                 f"with single commas, like 'C,G')")
            c = parse_chord_symbol(sym, f"chords, bar {b}")
            bar.append((c.root, c.quality, c.bass))
        out.append(bar)
    return out


_parse_form, _parse_chords, _parse_bars = form, chords, bars  # bars_from's arguments shadow these names


def bars_from(form=None, chords=None, bars=None, max_bars: int = MAX_BARS) -> int | None:
    """The number of bars of a piece from its controls: `bars` when given, else the bars of
    `form` (a form string or parsed phrases), else of `chords` (a chord text or its parsed
    bars); None when none is given. Those given must agree (InputError saying which differ)."""
    counts = []
    if form is not None:
        counts.append(("the form has", sum(p.bars for p in _parse_form(form, max_bars))))
    if chords is not None:
        parsed = chords if isinstance(chords, list) else _parse_chords(chords, max_bars)
        counts.append(("the chords have", len(parsed)))
    if bars is not None:
        counts.append(("bars is", _parse_bars(bars, max_bars)))
    if not counts:
        return None
    if len({n for _, n in counts}) > 1:
        given = ", ".join(f"{what} {n}" for what, n in counts)
        raise InputError(f"bars disagree: {given}; they must agree (without bars, the number of bars "
                         f"follows from the form or the chords)")
    return counts[0][1]
