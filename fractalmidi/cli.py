"""The `fractalmidi` command line.

    fractalmidi inspect IN.mid [--beats FILE] [--json]        what the model sees of a file
    fractalmidi quantize IN.mid OUT.mid [--beats FILE]        the file put on the grid
    fractalmidi evaluate FILE_OR_DIR... [--json]              musical metrics, mean and std
    fractalmidi build-dataset MIDI_DIR OUT_DIR                a HF dataset from a MIDI folder
    fractalmidi generate --bars N --seed S --out x.mid         a new piece (the shipped model by default)
    fractalmidi inpaint --input IN.mid --bars 16-32 --out OUT.mid
    fractalmidi continue --input IN.mid --bars 8 --out OUT.mid
    fractalmidi arrange --melody IN.mid --out OUT.mid         an accompaniment around a melody, kept as it is
    fractalmidi push MODEL_DIR REPO_ID [--private]            upload a model with its code to the Hub

Expected problems (a bad file, a bad argument) print one line, `fractalmidi: error: ...`,
and exit with status 2; they never show a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import numpy as np

from . import controls
from . import limits_fractalmidi as limits
from .errors import InputError
from .limits_fractalmidi import TEMPO_BPM
from .piece import PIANO_RANGE

# ----------------------------------------------------------------------------- helpers
def _midi_files(inputs: list[str], beats_dir=None) -> list[tuple[Path, Path | None]]:
    """(MIDI file, beat file or None) for files and folders (searched recursively)."""
    from .midi_io import find_midi_files, resolve_beats

    pairs = []
    for name in inputs:
        p = Path(name)
        if p.is_dir():
            pairs += find_midi_files(p, beats_dir)
        elif p.is_file():
            pairs.append((p, resolve_beats(p, "auto", beats_dir)))
        else:
            raise InputError(f"{p}: no such file or folder")
    if not pairs:
        raise InputError(f"no MIDI files (*.mid, *.midi) in {', '.join(inputs)}")
    return pairs


def _pitch_range(text: str) -> tuple[int, int]:
    try:
        lo, hi = (int(x) for x in text.split("-"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"pitch range must look like 21-108, got {text!r}") from None
    if not 0 <= lo <= hi <= 127:
        raise argparse.ArgumentTypeError(f"pitch range {text} must lie within 0-127, low <= high")
    return lo, hi


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v


def _check_output(path) -> None:
    """An output file argument: its folder must exist, and it must not be a folder."""
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{p}: is a folder; give a file name")
    if not p.parent.is_dir():
        raise InputError(f"{p}: the folder {p.parent} does not exist")


def _read_args(args) -> dict:
    tracks = [t.strip() for t in args.tracks.split(",")] if getattr(args, "tracks", None) else None
    return dict(steps_per_beat=args.steps_per_beat, pitch_range=args.pitch_range, tracks=tracks)


def _beats_for(args):
    """The input's beat file by `read_midi`'s own rule (`midi_io.resolve_beats`): --beats FILE,
    none with --no-beats, else the one found beside the input."""
    from .midi_io import resolve_beats

    return resolve_beats(args.input, args.beats if args.beats is not None else (None if args.no_beats else "auto"))


def _fmt(x) -> str:
    return "nan" if isinstance(x, float) and math.isnan(x) else (f"{x:.4f}" if isinstance(x, float) else str(x))


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o))


# ----------------------------------------------------------------------------- inspect
def cmd_inspect(args) -> int:
    from .midi_io import read_midi

    piece, report = read_midi(args.input, beats=_beats_for(args), **_read_args(args))
    s = piece.structure()
    bars = [
        {
            "bar": i + 1,
            "start_step": int(piece.bar_starts[i]),
            "time_signature": f"{s['numerator'][i]}/{s['denominator'][i]}",
            "steps": int(s["length"][i]),
            "tempo_bpm": round(float(s["tempo"][i]), 3),
            "onsets": int(round(s["density"][i] * s["length"][i])),
            "density": round(float(s["density"][i]), 4),
        }
        for i in range(piece.num_bars)
    ]
    out = {
        "file": str(args.input),
        "grid": report.grid,
        "steps_per_beat": piece.steps_per_beat,
        "pitch_range": list(piece.pitch_range),
        "tracks": report.tracks_used,
        "num_bars": piece.num_bars,
        "num_steps": piece.num_steps,
        "duration_seconds": round(piece.duration_seconds, 3),
        "tempo_events": len(piece.tempo_bpm),
        "notes_in_file": report.source_notes,
        "notes_kept": report.kept_notes,
        "notes_dropped": report.dropped,
        "notes_changed": report.changed,
        "onset_distance_to_grid_median_steps": round(report.onset_error_median, 4),
        "onsets_within_0.1_step": round(report.onsets_within_0_1, 4),
        "warnings": report.warnings,
        "bars": bars,
    }
    if args.json:
        print(json.dumps(out, indent=1, default=_json_default))
        return 0
    sigs = {}
    for b in bars:
        sigs[b["time_signature"]] = sigs.get(b["time_signature"], 0) + 1
    print(f"{args.input}")
    print(f"  grid:      {report.grid}, {piece.steps_per_beat} steps per quarter note")
    print(f"  tracks:    {', '.join(report.tracks_used)} (merged)")
    print(f"  length:    {piece.num_bars} bars, {piece.num_steps} steps, {piece.duration_seconds:.1f} s")
    print("  metre:     " + ", ".join(f"{k} x{v}" for k, v in sigs.items()))
    t = s["tempo"]
    print(f"  tempo:     {t.min():.1f}-{t.max():.1f} BPM per bar, {len(piece.tempo_bpm)} tempo events")
    print(f"  notes:     {report.kept_notes} kept of {report.source_notes}")
    for why, n in report.dropped.items():
        print(f"    dropped  {n:6d}  {why}")
    for why, n in report.changed.items():
        print(f"    changed  {n:6d}  {why}")
    print(
        f"  grid fit:  median onset distance {report.onset_error_median:.3f} steps, "
        f"{100 * report.onsets_within_0_1:.1f}% within 0.1 step"
    )
    for w in report.warnings:
        print(f"  warning:   {w}")
    print(f"\n  {'bar':>4} {'metre':>6} {'steps':>5} {'tempo':>8} {'onsets':>6} {'density':>7}")
    for b in bars:
        print(
            f"  {b['bar']:4d} {b['time_signature']:>6} {b['steps']:5d} {b['tempo_bpm']:8.2f} "
            f"{b['onsets']:6d} {b['density']:7.3f}"
        )
    return 0


# ----------------------------------------------------------------------------- quantize
def cmd_quantize(args) -> int:
    from .midi_io import read_midi, read_midi_tracks, write_midi

    _check_output(args.output)
    beats = _beats_for(args)
    if args.merge:
        piece, report = read_midi(args.input, beats=beats, **_read_args(args))
        target = piece
    else:
        target, report = read_midi_tracks(args.input, beats=beats, **_read_args(args))
        piece = target[0][1]
    write_midi(target, args.output)
    lost = sum(report.dropped.values())
    print(
        f"{args.output}: {report.kept_notes} notes on {piece.num_bars} bars "
        f"({piece.steps_per_beat} steps per quarter note, grid from {report.grid}); "
        f"{lost} dropped, {sum(report.changed.values())} changed"
        + (f" ({'; '.join(f'{n} {w}' for w, n in {**report.dropped, **report.changed}.items())})" if lost or report.changed else "")
    )
    return 0


# ----------------------------------------------------------------------------- evaluate
def _evaluation_piece(f, beats, args, melody_wanted: bool):
    """(piece, melody piece or None, first bar or None) of one file for `evaluate`: the merged
    piece as `read_midi` gives it; its track named MELODY (if any and `melody_wanted`) on the
    same bars; cut to the first run of --bars 4/4 bars when asked (None if there is none)."""
    from .metrics import first_bars
    from .midi_io import read_midi, read_midi_tracks

    piece, _ = read_midi(f, beats=beats, **_read_args(args))
    melody = None
    if melody_wanted:
        tracks, _ = read_midi_tracks(f, beats=beats, **_read_args(args))
        melody = next((p for name, p in tracks if name.lower() == "melody"), None)
    if not args.bars:
        return piece, melody, 0
    window = first_bars(piece, args.bars)
    if window is None:
        return None, None, None
    first, piece = window
    return piece, (melody.crop_bars(first, first + args.bars) if melody is not None else None), first


def cmd_evaluate(args) -> int:
    from tqdm.auto import tqdm

    from .metrics import METRIC_KEYS, bar_features, evaluate_piece, frechet_distance, summarize

    reference = None
    if args.reference is not None:  # checked before any work: a bad folder is one line, status 2
        if not args.reference.is_dir():
            raise InputError(f"{args.reference}: reference folder not found" if not args.reference.exists()
                             else f"{args.reference}: --reference must be a folder of MIDI files")
        try:
            reference = _midi_files([str(args.reference)])
        except InputError as e:
            raise InputError(f"--reference: {e}") from None
    files = _midi_files(args.inputs, args.beats_dir)
    # the melody metrics use a track named MELODY where the file has one (and --tracks keeps it)
    melody_wanted = not args.tracks or "melody" in [t.strip().lower() for t in args.tracks.split(",")]
    rows, failed, short, features = [], [], [], []
    for f, beats in tqdm(files, desc="evaluate", unit="file", disable=len(files) < 5 or args.json, file=sys.stderr):
        beats = None if args.no_beats else beats
        try:
            piece, melody, first = _evaluation_piece(f, beats, args, melody_wanted)
        except InputError as e:
            failed.append({"file": str(f), "error": str(e)})
            continue
        if piece is None:
            short.append(str(f))
            continue
        features.append(bar_features(piece))
        rows.append({"file": str(f), "beats": str(beats) if beats else None,
                     "melody": "MELODY track" if melody is not None else "top voice",
                     **({"first_bar": first + 1} if args.bars else {}), **evaluate_piece(piece, melody)})
    if not rows:  # nothing could be read: no table of NaN, one line per file and status 2
        for fl in failed[:-1]:
            print(f"fractalmidi: error: {fl['error']}", file=sys.stderr)
        if not failed:
            raise InputError(f"none of the {len(short)} files has {args.bars} consecutive bars of 4/4")
        raise InputError(failed[-1]["error"] + (f" (none of the {len(failed)} files could be read)" if len(failed) > 1 else ""))
    summary = summarize([{k: r[k] for k in METRIC_KEYS} for r in rows])
    frechet = None
    if reference is not None:
        ref_features, ref_failed, ref_short = [], [], 0
        for f, beats in tqdm(reference, desc="reference", unit="file", disable=len(reference) < 5 or args.json, file=sys.stderr):
            try:
                piece, _, _ = _evaluation_piece(f, None if args.no_beats else beats, args, False)
            except InputError as e:
                ref_failed.append({"file": str(f), "error": str(e)})
                continue
            if piece is None:
                ref_short += 1
                continue
            ref_features.append(bar_features(piece))
        if not ref_features:
            raise InputError(f"{args.reference}: none of the {len(reference)} reference MIDI files could be used"
                             + (f" ({ref_failed[-1]['error']})" if ref_failed else ""))
        a, b = np.concatenate(features), np.concatenate(ref_features)
        frechet = {"reference": str(args.reference), "distance": frechet_distance(a, b), "bars": len(a),
                   "reference_files": len(ref_features), "reference_bars": len(b),
                   "reference_failed": ref_failed, "reference_without_window": ref_short}
    n_melody = sum(r["melody"] == "MELODY track" for r in rows)
    melody_note = f"melody metrics on the MELODY track in {n_melody} files, on the top voice in {len(rows) - n_melody}"
    window_note = f"the first {args.bars} consecutive 4/4 bars of each file" if args.bars else "whole files"
    if args.json:
        out = {
            "files": rows,
            "failed": failed,
            "without_window": short,
            "summary": {k: {"mean": m, "std": s, "count": n} for k, (m, s, n) in summary.items()},
        }
        if frechet is not None:
            out["frechet"] = frechet
        print(json.dumps(out, indent=1, default=_json_default).replace("NaN", "null"))
    else:
        keys = list(METRIC_KEYS)
        short_names = {"pitch_entropy": "pitch_ent", "pitch_class_entropy": "pc_ent", "scale_consistency": "scale",
                       "groove_consistency": "groove", "polyphony": "polyph", "empty_beat_rate": "empty_beat",
                       "melody_step_share": "mel_step", "melody_mean_leap": "mel_leap",
                       "repeated_bar_rate": "rep_bars", "bar_similarity": "bar_sim"}
        if len(rows) <= args.max_rows:
            print(f"{'file':40s} " + " ".join(f"{short_names.get(k, k):>10s}" for k in keys) + "  melody")
            for r in rows:
                name = r["file"] if len(r["file"]) <= 40 else "..." + r["file"][-37:]
                print(f"{name:40s} " + " ".join(f"{_fmt(int(r[k]) if k.startswith('n_') else r[k]):>10s}" for k in keys)
                      + f"  {r['melody']}")
        print(f"\n{len(rows)} files evaluated on the beat grid where a beat file was found "
              f"({sum(r['beats'] is not None for r in rows)} with one); groove on the {args.steps_per_beat}-steps-per-beat grid; "
              f"{window_note}; {melody_note}")
        for k in keys:
            m, s, n = summary[k] if k in summary else (math.nan, math.nan, 0)
            print(f"  {k:22s} {m:8.4f} ± {s:.4f}  (n={n})")
        if frechet is not None:
            print(f"\nper-bar feature Frechet distance to {frechet['reference']}: {frechet['distance']:.4f} "
                  f"({frechet['bars']} bars vs {frechet['reference_bars']} bars of {frechet['reference_files']} reference files)")
            for fl in frechet["reference_failed"]:
                print(f"reference skipped: {fl['error']}", file=sys.stderr)
            if frechet["reference_without_window"]:
                print(f"reference: {frechet['reference_without_window']} files without {args.bars} consecutive 4/4 bars left out",
                      file=sys.stderr)
        for fl in failed:
            print(f"skipped: {fl['error']}", file=sys.stderr)
        if short:
            print(f"left out: {len(short)} files without {args.bars} consecutive 4/4 bars ({', '.join(short[:5])}"
                  f"{' ...' if len(short) > 5 else ''})", file=sys.stderr)
    return 1 if failed else 0


# ----------------------------------------------------------------------------- build-dataset
def cmd_build_dataset(args) -> int:
    from .data import build_dataset

    ds, report = build_dataset(
        args.midi_dir,
        args.out_dir,
        steps_per_beat=args.steps_per_beat,
        use_beats=not args.no_beats,
        num_proc=args.num_proc,
        validation_fraction=args.validation_fraction,
        structure_dir=args.structure,
    )
    print(json.dumps(report.as_dict() if hasattr(report, "as_dict") else report.__dict__, indent=1, default=_json_default))
    return 0



# ----------------------------------------------------------------------------- generation


def _arg(parse):
    """An argparse `type` from a `controls` parser: its InputError becomes argparse's one-line
    usage error (exit status 2), raised while the arguments are read, before any model loads."""

    def convert(text):
        try:
            return parse(text)
        except InputError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


def _bars(text: str) -> int:
    return controls.bars(text)


KEEP_CHOICES = ("melody", "chords")


def _keep(text: str) -> set[str]:
    """`--keep melody,chords` -> {"melody", "chords"}."""
    parts = {p.strip().lower() for p in str(text).split(",") if p.strip()}
    bad = sorted(parts - set(KEEP_CHOICES))
    if bad or not parts:
        raise InputError(f"--keep: {', '.join(bad) or 'nothing'} is not one of {', '.join(KEEP_CHOICES)} "
                         f"(comma-separated)")
    return parts


def _song_controls(args) -> None:
    """Read --form and --key (and the symbols of --chords) first of all, so that a bad one is
    named in one line before anything else (even the model folder) is looked at: args.form
    becomes its phrases, args.key its name ("G:maj")."""
    if getattr(args, "form", None) is not None:
        args.form = controls.form(args.form)
    if getattr(args, "key", None) is not None:
        args.key = controls.key(args.key)[2]
    if getattr(args, "chords", None) is not None:
        controls.chords(args.chords)


def _form_bars(args) -> int | None:
    return sum(p.bars for p in args.form) if getattr(args, "form", None) is not None else None


def _check_levels(args, limits: dict) -> None:
    """Refuse (before the weights load) the options the model's levels cannot honour."""
    levels = limits.get("levels", ("structure", "harmony", "notes"))
    where = f"the model at {controls.model_dir(args.model)}"
    if getattr(args, "musicxml", False) and "melody" not in levels:
        raise InputError(f"--musicxml: {where} has no melody level")
    if getattr(args, "chords", None) is not None and "chords" not in levels:
        raise InputError(f"--chords: {where} has no chord level (see hub_configs/songs_tiny.json)")
    for what in sorted(getattr(args, "keep", None) or ()):
        if what not in levels:
            level = "melody" if what == "melody" else "chord"
            raise InputError(f"--keep {what}: {where} has no {level} level (see hub_configs/songs_tiny.json)")
    if getattr(args, "command", None) == "arrange" and "melody" not in levels:
        raise InputError(f"arrange: {where} has no melody level to keep a melody in "
                         f"(a song model such as hub_configs/songs_tiny.json has one)")


def _generation_kwargs(args, num_bars, limits: dict | None = None) -> dict:
    """`generate`'s keyword arguments from the command line, checked against the model's
    limits (its config.json: density range, levels, bars) before the weights load."""
    limits = limits or {}
    _check_levels(args, limits)
    density_max = limits.get("density_max", controls.DEFAULT_DENSITY_MAX)
    max_bars = limits.get("max_bars", controls.MAX_BARS)
    if num_bars > max_bars:
        raise InputError(f"{num_bars} bars is more than this model's max_bars = {max_bars}")
    structure = {}
    for what in ("density", "tempo"):
        curve = controls.curve(getattr(args, what), what, density_max)
        if curve is not None:
            if len(curve) != num_bars:
                raise InputError(f"the {what} curve has {len(curve)} values for {num_bars} bars")
            structure[what] = curve
    kw = dict(temperature=args.temperature, top_p=args.top_p, guidance_scale=args.cfg, structure=structure or None,
              refine_ratio=args.refine_ratio, refine_rounds=args.refine_rounds, variation=args.variation,
              chord_gain=args.chord_gain, melody_gain=args.melody_gain, sustain=args.sustain,
              rhythm_repeat=args.rhythm_repeat, rhythm_prior=args.rhythm_prior)
    if getattr(args, "chords", None) is not None:
        chords = controls.chords(args.chords, max_bars)
        if len(chords) != num_bars:
            raise InputError(f"--chords gives {len(chords)} bars of chords for a piece of {num_bars} bars "
                             f"(one symbol per bar of the whole piece)")
        kw["chords"] = chords
    if getattr(args, "form", None) is not None:
        form = controls.form(args.form, max_bars)
        if _form_bars(args) != num_bars:
            raise InputError(f"--form has {_form_bars(args)} bars for a piece of {num_bars} bars "
                             f"(the form covers the whole piece)")
        kw["form"] = form
    if getattr(args, "key", None) is not None:
        kw["key"] = args.key
    if args.iterations:
        kw["num_iterations"] = controls.iterations(args.iterations, len(limits["levels"]) if "levels" in limits else None)
    return kw


def _output_paths(args, stem: str) -> list[Path]:
    """Where the samples go, decided (and checked) before any work: `--out X.mid` for one
    sample, X_001.mid, X_002.mid ... beside it for several; `--out-dir DIR` (created if
    missing) holds STEM.mid or STEM_001.mid ...; by default the current folder."""
    if args.out and args.out_dir:
        raise InputError("give --out (a file) or --out-dir (a folder), not both")
    if args.out:
        base = Path(args.out)
        if base.is_dir():
            raise InputError(f"--out {base}: is a folder; give a file name (or use --out-dir)")
        if not base.parent.is_dir():
            raise InputError(f"--out {base}: the folder {base.parent} does not exist (create it, or use --out-dir, which is created)")
    else:
        folder = Path(args.out_dir or ".")
        if folder.exists() and not folder.is_dir():
            raise InputError(f"--out-dir {folder}: is a file, not a folder")
        base = folder / f"{stem}.mid"
    if args.num_samples == 1:
        return [base]
    return [base.with_name(f"{base.stem}_{i + 1:03d}{base.suffix or '.mid'}") for i in range(args.num_samples)]


def _write_midi(result, index: int, path: Path, merge: bool) -> Path:
    """Sample `index` as MIDI (`result.to_midi`: a Melody and a Piano track, chord markers,
    key), or with `merge` one Piano track holding melody and accompaniment."""
    return result.to_midi(path, index, merge=merge)


def _write_results(result, args, paths: list[Path]) -> list[Path]:
    """Write each sample to its path, optionally evaluate and plot."""
    from .metrics import evaluate_piece, structure_adherence

    for i, path in enumerate(paths):
        path.parent.mkdir(parents=True, exist_ok=True)  # only --out-dir can be missing here
        piece = result.to_piece(i)
        _write_midi(result, i, path, getattr(args, "merge", False))
        line = f"{path}: {piece.num_bars} bars, {len(piece.notes)} notes, {piece.duration_seconds:.1f} s"
        if result.form is not None:
            line += f", form {result.form}"
        if result.key is not None:
            line += f", key {result.key}"
        if getattr(args, "musicxml", False):
            line += f"\n  lead sheet: {result.to_musicxml(path.with_suffix('.musicxml'), i, title=path.stem)}"
        if args.evaluate:
            m = evaluate_piece(piece)
            m.update(structure_adherence(piece, density=result.requested_density[i].tolist()))
            line += "\n  " + ", ".join(f"{k} {_fmt(v)}" for k, v in m.items() if not k.startswith("n_"))
        if getattr(args, "plot", False):
            from .plot import plot_piece

            png = plot_piece(piece, path.with_suffix(".png"), requested_density=result.requested_density[i].tolist())
            line += f"\n  plot: {png}"
        print(line)
    print(f"{result.num_forward_passes} sequential network passes per generation")
    return paths


def cmd_generate(args) -> int:
    _song_controls(args)
    limits = controls.model_limits(args.model)
    if args.time_signature is not None:
        controls.time_signature(f"{args.time_signature[0]}/{args.time_signature[1]}", limits["steps_per_beat"],
                                limits["max_bar_len"])
    _check_levels(args, limits)
    args.bars = controls.bars_from(form=args.form, chords=args.chords, bars=args.bars, max_bars=limits["max_bars"])
    if args.bars is None:
        raise InputError("give --bars N (or --form or --chords, which give the number of bars)")
    kw = _generation_kwargs(args, args.bars, limits)
    paths = _output_paths(args, "fractalmidi")
    model = controls.load_model(args.model)
    result = model.generate(num_bars=args.bars, time_signatures=args.time_signature, seed=args.seed,
                            num_samples=args.num_samples, progress=not args.quiet, **kw)
    _write_results(result, args, paths)
    return 0


def _track_list(args) -> list[str] | None:
    return [t.strip() for t in args.tracks.split(",")] if getattr(args, "tracks", None) else None


def _read_prompt(args):
    from .midi_io import read_midi

    piece, _ = read_midi(args.input, beats=_beats_for(args), tracks=_track_list(args))
    return piece


def _monophonic(notes: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Melody notes (K, 4) as one line, sorted by onset: of notes starting at the same step the
    highest is kept, and a note still sounding when the next starts ends there. Returns the
    notes, how many were shortened and how many dropped (both 0: the line was monophonic)."""
    notes = np.asarray(notes, dtype=np.int64).reshape(-1, 4)
    notes = notes[np.lexsort((-notes[:, 0], notes[:, 1]))]  # by onset, the highest first
    first = np.ones(len(notes), bool)
    first[1:] = notes[1:, 1] != notes[:-1, 1]
    line = notes[first].copy()
    following = np.append(line[1:, 1], np.iinfo(np.int64).max)  # the next note's onset
    cut = line[:, 2] > following
    line[cut, 2] = following[cut]
    return line, int(cut.sum()), int((~first).sum())


def _melody_note(where: str, shortened: int, dropped: int) -> str:
    """What `_monophonic` changed, said in a line (empty when nothing)."""
    if not shortened and not dropped:
        return ""
    parts = ([f"{shortened} shortened to end where the next note starts"] if shortened else []) + (
        [f"{dropped} dropped under a higher note starting with it"] if dropped else [])
    return f"{where} made monophonic: {', '.join(parts)}"


def _read_melody(args):
    """The melody `arrange` keeps: (its notes (K, 4), monophonic; the Piece its track lies on:
    the bars, time signatures and tempo of the file where the melody sounds; what was read, as
    words; a note on what `_monophonic` changed, or ""). The melody is the --track named, else
    the track named Melody (any case), else the whole file if it is monophonic."""
    from .midi_io import read_midi, read_midi_tracks

    beats = _beats_for(args)
    if args.track is not None:
        piece, report = read_midi(args.input, beats=beats, tracks=[args.track])
        where = f"track {', '.join(report.tracks_used)}"
    else:
        tracks, _ = read_midi_tracks(args.input, beats=beats)
        names = [name for name, _ in tracks]
        named = next((n for n in names if n.lower() == "melody"), None)
        if named is not None:
            piece, _ = read_midi(args.input, beats=beats, tracks=[named])
            where = f"track {named}"
        else:
            piece, _ = read_midi(args.input, beats=beats)
            if sum(_monophonic(piece.notes)[1:]):
                raise InputError(f"{args.input}: no track named Melody and the file is not monophonic "
                                 f"(tracks: {', '.join(names)}); pick the melody's track with --track NAME or NUMBER")
            where = "the whole file" if len(names) > 1 else f"track {names[0]}"
    notes, shortened, dropped = _monophonic(piece.notes)
    return notes, piece, where, _melody_note(f"the melody ({where})", shortened, dropped)


def _split_melody(args):
    """IN.mid for `inpaint --keep melody`: (the prompt: every track read but the Melody one,
    merged, on the file's bars; the melody's notes, monophonic; a note on what `_monophonic`
    changed, or "")."""
    from .midi_io import read_midi_tracks
    from .piece import normalize_notes

    tracks, _ = read_midi_tracks(args.input, beats=_beats_for(args), tracks=_track_list(args))
    melody = [p.notes for name, p in tracks if name.lower() == "melody"]
    if not melody:
        raise InputError(f"--keep melody: {args.input} has no track named Melody "
                         f"(tracks: {', '.join(name for name, _ in tracks)})")
    rest = [p.notes for name, p in tracks if name.lower() != "melody"]
    rest, _ = normalize_notes(np.concatenate(rest) if rest else np.zeros((0, 4), np.int64))
    notes, shortened, dropped = _monophonic(np.concatenate(melody))
    return tracks[0][1].replace_notes(rest), notes, _melody_note("the Melody track", shortened, dropped)


def _chords_per_bar(spans, piece) -> list:
    """Chord spans (start step, end step, name like "C:maj") -> `generate`'s chords: per bar of
    `piece` None when no chord sounds in it, else one (root, quality, bass) per beat that
    starts in it ("N" for a beat without a chord), so that every beat keeps its chord."""
    from .structure import NO_CHORD, parse_chord

    spb = piece.steps_per_beat
    ceil = lambda step: -(-int(step) // spb)  # the first beat starting at or after `step`
    at = {}  # beat -> (root, quality, bass)
    for start, end, name in spans:
        c = parse_chord(name, "chord marker")
        for beat in range(ceil(start), ceil(end)):
            at[beat] = (c.root, c.quality, c.bass)
    none = (NO_CHORD.root, NO_CHORD.quality, NO_CHORD.bass)
    out = []
    for first, stop in zip(piece.bar_starts[:-1], piece.bar_starts[1:]):
        beats = [at.get(b) for b in range(ceil(first), ceil(stop))]
        out.append(None if all(c is None for c in beats) else [c or none for c in beats])
    return out


def _kept_chords(args, prompt) -> list:
    """IN.mid's chord markers for `inpaint --keep chords`, per bar of the prompt."""
    from .midi_io import read_song_midi

    song = read_song_midi(args.input)
    if not song.chords:
        raise InputError(f"--keep chords: {args.input} has no chord markers")
    beats = _beats_for(args)
    if beats is not None:
        raise InputError(f"--keep chords: the chord markers lie on {args.input}'s own ticks, but the notes are read "
                         f"with the beat file {beats}; add --no-beats")
    return _chords_per_bar(song.chords, prompt)


def _runs(mask) -> list:
    """(first, stop) of every run of True in a bool array."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[::2], edges[1::2]))


def _song_context(args, limits: dict, prompt, kept_bars: list) -> tuple:
    """A song file's own levels as the context of `inpaint` and `continue`, for a model that
    has them: with a melody level and a track named Melody in IN.mid, that track is the melody
    over `kept_bars` (ranges of bars the command keeps) and the prompt the other tracks; with
    a chord level and chord markers (read on the file's own ticks, so not with a beat file),
    the chords of the kept bars. Returns (prompt, generate's extra keyword arguments, notes to
    print)."""
    from .midi_io import read_midi_tracks

    levels = limits.get("levels", ())
    kw, notes = {}, []
    if "melody" in levels:
        tracks, _ = read_midi_tracks(args.input, beats=_beats_for(args), tracks=_track_list(args))
        if any(name.lower() == "melody" for name, _ in tracks):
            prompt, melody, note = _split_melody(args)
            kw.update(melody=melody, melody_bars=kept_bars)
            notes.append(f"{args.input}: its Melody track is the melody of the bars kept; the new bars get their own")
            if note:
                notes.append(note)
    if "chords" in levels and args.chords is None and _beats_for(args) is None:
        from .midi_io import read_song_midi

        song = read_song_midi(args.input)
        if song.chords:
            per_bar = _chords_per_bar(song.chords, prompt)
            kept = np.zeros(len(per_bar), bool)
            for first, stop in kept_bars:
                kept[first:min(stop, len(per_bar))] = True
            kw["chords"] = [c if k else None for c, k in zip(per_bar, kept)]
            notes.append(f"{args.input}: its chord markers are the chords of the bars kept")
    return prompt, kw, notes


def cmd_inpaint(args) -> int:
    _song_controls(args)
    limits = controls.model_limits(args.model)
    keep = args.keep or set()
    _check_levels(args, limits)
    if "chords" in keep and args.chords is not None:
        raise InputError("give --chords or --keep chords, not both")
    melody, note = None, ""
    if "melody" in keep:
        prompt, melody, note = _split_melody(args)
    else:
        prompt = _read_prompt(args)
    for first, stop in args.bars:
        if stop > prompt.num_bars:
            raise InputError(
                f"bars {first + 1}-{stop} lie outside {args.input}, which has bars 1-{prompt.num_bars} (bars count from 1)"
            )
    kw = _generation_kwargs(args, prompt.num_bars, limits)
    if "chords" in keep:
        kw["chords"] = _kept_chords(args, prompt)
    notes = [note] if note else []
    if "melody" not in keep:  # the song's melody (and chords) outside the bars are their context
        region = np.zeros(prompt.num_bars, bool)
        for first, stop in args.bars:
            region[first:stop] = True
        kept = [(int(a), int(b)) for a, b in _runs(~region)]
        if kept:
            context_prompt, context, more = _song_context(args, limits, prompt, kept)
            if "melody" in context:
                prompt, melody = context_prompt, context.pop("melody")
                kw["melody_bars"] = context.pop("melody_bars")
            if "chords" not in keep:
                kw.update(context)
            notes += more
    paths = _output_paths(args, Path(args.input).stem + "_inpainted")
    for line in notes:
        print(line)
    model = controls.load_model(args.model)
    result = model.generate(prompt=prompt, inpaint_bars=args.bars, melody=melody, seed=args.seed,
                            num_samples=args.num_samples, progress=not args.quiet, **kw)
    _write_results(result, args, paths)
    return 0


def cmd_continue(args) -> int:
    _song_controls(args)
    limits = controls.model_limits(args.model)
    if args.time_signature is not None:
        controls.time_signature(f"{args.time_signature[0]}/{args.time_signature[1]}", limits["steps_per_beat"],
                                limits["max_bar_len"])
    _check_levels(args, limits)
    prompt = _read_prompt(args)
    total = prompt.num_bars + args.bars
    if args.form is not None and _form_bars(args) != total:
        raise InputError(f"--form has {_form_bars(args)} bars, the piece {total} ({prompt.num_bars} of {args.input} "
                         f"+ {args.bars} added): the form covers the whole piece")
    kw = _generation_kwargs(args, total, limits)
    prompt, context, notes = _song_context(args, limits, prompt, [(0, prompt.num_bars)])
    if "chords" in context:  # the new bars' chords are free
        context["chords"] = context["chords"] + [None] * args.bars
    kw.update(context)
    paths = _output_paths(args, Path(args.input).stem + "_continued")
    for line in notes:
        print(line)
    model = controls.load_model(args.model)
    result = model.generate(prompt=prompt, num_bars=total, time_signatures=args.time_signature, seed=args.seed,
                            num_samples=args.num_samples, progress=not args.quiet, **kw)
    _write_results(result, args, paths)
    return 0


def cmd_arrange(args) -> int:
    _song_controls(args)
    limits = controls.model_limits(args.model)
    _check_levels(args, limits)  # a model without a melody level is refused here, before the weights load
    paths = _output_paths(args, Path(args.input).stem + "_arranged")
    melody, piece, where, note = _read_melody(args)
    given = controls.bars_from(form=args.form, chords=args.chords, bars=args.bars, max_bars=limits["max_bars"])
    total = piece.num_bars if given is None else given
    if total < piece.num_bars:
        what = "--bars is" if args.bars is not None else ("--form has" if args.form is not None else "--chords have")
        raise InputError(f"{what} {total} bars, fewer than the melody's {piece.num_bars} bars in {args.input} "
                         f"(--bars may add free bars after the melody, never cut it)")
    if args.bars is None and total != piece.num_bars:
        what = "--form has" if args.form is not None else "--chords have"
        raise InputError(f"{what} {total} bars, the melody in {args.input} {piece.num_bars}: they must agree "
                         f"(add --bars {total} for free bars after the melody)")
    sigs = [tuple(int(v) for v in s) for s in piece.time_signatures]
    sigs += [sigs[-1]] * (total - len(sigs))  # free bars after the melody: its last bar's metre
    for n, d in sorted(set(sigs)):
        controls.time_signature(f"{n}/{d}", limits["steps_per_beat"], limits["max_bar_len"])
    kw = _generation_kwargs(args, total, limits)
    structure = kw["structure"] or {}
    if "tempo" not in structure:  # the melody's own tempo, bar by bar (free bars after it: generated)
        lo, hi = TEMPO_BPM
        structure["tempo"] = [float(np.clip(t, lo, hi)) for t in piece.bar_tempo()] + [None] * (total - piece.num_bars)
    kw["structure"] = structure
    print(f"{args.input}: the melody is {where}, {len(melody)} notes on {piece.num_bars} bars"
          + (f"; {total - piece.num_bars} free bars after it" if total > piece.num_bars else ""))
    if note:
        print(note)
    model = controls.load_model(args.model)
    result = model.generate(num_bars=total, time_signatures=sigs, melody=melody, melody_bars=[(0, piece.num_bars)], seed=args.seed,
                            num_samples=args.num_samples, progress=not args.quiet, **kw)
    _write_results(result, args, paths)
    return 0


def cmd_push(args) -> int:
    from . import hub

    hub.check_model_dir(args.model_dir)  # refused in one line before torch loads
    hub.check_repo_id(args.repo_id)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    url = hub.push(args.model_dir, args.repo_id, private=args.private, revision=args.revision,
                   commit_message=args.commit_message)
    print(url)
    return 0


# ----------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fractalmidi",
        description=(
            "FractalMIDI: hierarchical piano music generation. The grid: steps per quarter note "
            "(default 4 = 16th notes); bars from time signatures, or from a beat file's downbeats; "
            "tempo is a separate map from steps to seconds."
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def grid_options(p, beats=True):
        p.add_argument("--steps-per-beat", type=_positive_int, default=4, metavar="N",
                       help="grid steps per quarter note (default 4: 16th notes)")
        p.add_argument("--pitch-range", type=_pitch_range, default=PIANO_RANGE, metavar="LOW-HIGH",
                       help="MIDI pitches kept (default 21-108, the 88 piano keys); others are dropped")
        p.add_argument("--tracks", metavar="NAMES",
                       help="comma-separated track names or numbers to read (default: all non-drum tracks)")
        p.add_argument("--no-beats", action="store_true",
                       help="ignore beat files found beside the MIDI; use the file's own ticks per quarter")

    p = sub.add_parser("inspect", help="show what the model sees of a MIDI file: bars, tempo, density, notes kept",
                       description="Read a MIDI file onto the grid and report bars, time signatures, tempo and "
                                   "density per bar, and which notes the grid kept, changed or dropped, and why.")
    p.add_argument("input", metavar="IN.mid")
    p.add_argument("--beats", metavar="FILE",
                   help="beat annotation (POP909 beat_midi.txt: seconds, flag, downbeat flag per line); "
                        "default: beat_midi.txt or IN.beats.txt beside the file, if present")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    grid_options(p)
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("quantize", help="write the grid version of a MIDI file",
                       description="Put every note on the grid and write it back with the tempo map and time "
                                   "signatures; tracks stay separate unless --merge.")
    p.add_argument("input", metavar="IN.mid")
    p.add_argument("output", metavar="OUT.mid")
    p.add_argument("--beats", metavar="FILE", help="beat annotation (see inspect); default: one beside the file")
    p.add_argument("--merge", action="store_true", help="merge tracks into one piano track (the model's view)")
    grid_options(p)
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("evaluate", help="musical metrics of MIDI files (per file, then mean ± std)",
                       description="Pitch entropy, pitch-class entropy, scale consistency, groove consistency, "
                                   "polyphony and empty-beat rate (muspy's definitions, on the grid), melody step "
                                   "share and mean leap (on the track named MELODY, else the top voice), repeated-bar "
                                   "rate and mean best bar similarity, per file and mean ± std over all; with "
                                   "--reference, the per-bar feature Frechet distance to a folder of real songs. "
                                   "Folders are searched recursively.")
    p.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR")
    p.add_argument("--beats-dir", type=Path, metavar="DIR",
                   help="folder of beat files (DIR/STEM.txt or DIR/STEM/beat_midi.txt); beat files beside "
                        "the MIDI files are used too")
    p.add_argument("--json", action="store_true", help="print JSON (per file and summary)")
    p.add_argument("--max-rows", type=int, default=50, help="print the per-file table up to this many files")
    p.add_argument("--reference", type=Path, metavar="DIR",
                   help="a folder of real MIDI files (searched recursively, beat files beside them used): also "
                        "print the per-bar feature Frechet distance of the evaluated files to them")
    p.add_argument("--bars", type=_positive_int, metavar="N",
                   help="evaluate only the first N consecutive 4/4 bars of each file (and of each reference "
                        "file); files without such a run are left out and counted")
    grid_options(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("build-dataset", help="turn a folder of MIDI files into a Hugging Face dataset",
                       description="Read every MIDI file under MIDI_DIR (with beat files beside them, POP909 "
                                   "layout, where present), store one row per song (grid notes, structure, "
                                   "metadata) with a deterministic train/validation split, and save_to_disk "
                                   "into OUT_DIR. Bad files are skipped and listed.")
    p.add_argument("midi_dir", metavar="MIDI_DIR")
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument("--steps-per-beat", type=_positive_int, default=4, metavar="N")
    p.add_argument("--no-beats", action="store_true", help="ignore beat files")
    p.add_argument("--num-proc", type=_positive_int, default=1, help="worker processes (default 1)")
    p.add_argument("--validation-fraction", type=float, default=0.05, help="share of songs in validation")
    p.add_argument("--structure", metavar="DIR", default=None,
                   help="POP909 structure annotations (NNN/ folders): add each song's aligned form labels, "
                        "chords, key and melody as columns (masked where missing or badly aligned) and the "
                        "alignment summary to the report")
    p.set_defaults(func=cmd_build_dataset)

    def generation_options(p, stem):
        lim = limits
        p.add_argument("--model", metavar="PATH", help=f"model folder (default: ${controls.MODEL_ENV} if set, else the shipped "
                                                       "checkpoints/fractalmidi-pop909-songs)")
        p.add_argument("--seed", type=_arg(controls.seed), default=0,
                       help=f"random seed, {lim.SEED[0]}-{lim.SEED[1]}: the same seed gives the same piece (default 0)")
        p.add_argument("--temperature", type=_arg(controls.temperature), default=None,
                       help=f"{lim.TEMPERATURE[0]}-{lim.TEMPERATURE[1]}; higher = more varied "
                            "(default: the model's, 0.8 for the shipped one)")
        p.add_argument("--top-p", type=_arg(controls.top_p), default=None,
                       help="nucleus sampling, in (0, 1]; 1 = off (default: the model's, 0.9 for the shipped one)")
        p.add_argument("--guidance-scale", "--cfg", dest="cfg", type=_arg(controls.guidance_scale), default=None,
                       help=f"classifier-free guidance scale, {lim.GUIDANCE_SCALE[0]}-{lim.GUIDANCE_SCALE[1]}; 1 = none, "
                            "higher follows the structure more closely (default: the model's, 1.0 for the shipped one)")
        p.add_argument("--iterations", type=_arg(controls.iterations), metavar="N,N,N",
                       help=f"decoding iterations per level (structure,harmony,notes), each "
                            f"{lim.ITERATIONS[0]}-{lim.ITERATIONS[1]} (default: the model's)")
        p.add_argument("--refine-ratio", type=_arg(controls.refine_ratio), default=None,
                       help="fraction re-masked per refinement round, 0-1 (default: the model's, 0.3)")
        p.add_argument("--refine-rounds", type=_arg(controls.refine_rounds), default=None,
                       help=f"refinement rounds per content level, {lim.REFINE_ROUNDS[0]}-{lim.REFINE_ROUNDS[1]} "
                            "(default: the model's, 1)")
        p.add_argument("--variation", type=_arg(controls.variation), default=None,
                       help="how much a repeated phrase of the form differs from its first time: the share of its "
                            "tokens each refinement round re-samples on its own, 0-1 (default: the model's, 0.25)")
        p.add_argument("--chord-gain", type=_arg(controls.chord_gain), default=None,
                       help="with --chords: how strongly the notes lean to the chords' tones, an onset logit offset "
                            "0-8 (default: the model's, 2.5; 0 = through the conditioning alone)")
        p.add_argument("--melody-gain", type=_arg(controls.melody_gain), default=None,
                       help="how strongly the accompaniment stays under the melody: an onset logit offset 0-8 against "
                            "notes above it (default: the model's, 2 for the shipped one; 0 = through the conditioning alone)")
        p.add_argument("--sustain", type=_arg(controls.sustain), default=None,
                       help="how long notes last: a logit offset -4-4 of going on where a note may end "
                            "(default: the model's; > 0 longer, < 0 shorter)")
        p.add_argument("--rhythm-repeat", type=_arg(controls.rhythm_repeat), default=None,
                       help="the chance, 0-1, that a bar's rhythm repeats the bar before it in its phrase "
                            "(default: the model's, 0.5 for the shipped one; a model with a rhythm level)")
        p.add_argument("--rhythm-prior", type=_arg(controls.rhythm_prior), default=None,
                       help="how strongly each 4/4 bar's onsets go together as in the training songs (a run of "
                            "sixteenths, or none), 0-2 (default: the model's, 1 for the shipped one; 0 = off)")
        p.add_argument("--density", metavar="CURVE",
                       help="per-bar density in onsets per step, 0 to the model's density_max (4.0 for the shipped "
                            "one): a comma list (empty = free) or a .json list")
        p.add_argument("--tempo", metavar="CURVE",
                       help=f"per-bar tempo in BPM, {lim.TEMPO_BPM[0]:g}-{lim.TEMPO_BPM[1]:g}: a comma list or a .json list")
        p.add_argument("--num-samples", type=_arg(controls.num_samples), default=1,
                       help=f"pieces to generate, {lim.NUM_SAMPLES[0]}-{lim.NUM_SAMPLES[1]} (default 1)")
        p.add_argument("--out", metavar="OUT.mid",
                       help=f"output file; its folder must exist. Several samples: OUT_001.mid, OUT_002.mid ... "
                            f"beside it (default: {stem}.mid in the current folder)")
        p.add_argument("--out-dir", metavar="DIR",
                       help=f"output folder instead of --out, created if missing: DIR/{stem}.mid, or "
                            f"DIR/{stem}_001.mid ... for several samples")
        p.add_argument("--evaluate", action="store_true", help="print the metrics of each result")
        p.add_argument("--plot", action="store_true", help="write a PNG of the piano roll with the structure curves "
                                                           "beside each MIDI file (same name, .png)")
        p.add_argument("--musicxml", action="store_true",
                       help="also write a MusicXML lead sheet (melody and chord symbols) beside each MIDI file "
                            "(same name, .musicxml); needs a model with a melody level")
        p.add_argument("--chords", metavar="'C G Am F'",
                       help="the chords to keep, one symbol per bar of the whole piece, several in a bar joined by "
                            "commas ('C,G Am F/A G7', N = no chord); needs a model with a chord level")
        p.add_argument("--form", metavar="i4A8B8o4",
                       help="the song's form: phrases of a letter and their bars (upper case melodic, the same "
                            "letter the same material), covering exactly the whole piece; repeats copy their first "
                            "phrase. Default: drawn from the training songs' forms where the model keeps them")
        p.add_argument("--key", metavar="C:maj",
                       help=f"the key ({controls.KEY_EXAMPLES}), written as the key signature and, for a model "
                            "with form inputs, followed. Default: drawn by such a model, else none")
        p.add_argument("--merge", action="store_true",
                       help="write one Piano track holding melody and accompaniment (default: a song model writes "
                            "a Melody track beside the Piano track)")
        p.add_argument("--quiet", action="store_true", help="no progress bar")

    def prompt_options(p):
        p.add_argument("--input", required=True, metavar="IN.mid")
        p.add_argument("--beats", metavar="FILE", help="beat annotation of IN.mid (default: one beside it, see inspect)")
        p.add_argument("--no-beats", action="store_true", help="ignore beat files beside IN.mid")
        p.add_argument("--tracks", metavar="NAMES",
                       help="comma-separated track names or numbers of IN.mid to read (default: all non-drum tracks)")

    p = sub.add_parser("generate", help="generate a new piece with a model",
                       description="Generate a piece: structure per bar first, then harmony, then notes.")
    p.add_argument("--bars", type=_arg(controls.bars), default=None,
                   help=f"number of bars, 1-{controls.MAX_BARS} (and at most the model's max_bars); "
                        f"without it, the bars of --form, or one per --chords symbol (given together, they must agree)")
    p.add_argument("--time-signature", type=_arg(controls.time_signature), default=(4, 4),
                   help="e.g. 4/4, 3/4, 6/8: numerator 1-32, denominator a power of two up to 32 (default 4/4)")
    generation_options(p, "fractalmidi")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("inpaint", help="regenerate bars of a MIDI file, keeping everything else note for note",
                       description="Regenerate the given bars of IN.mid; every note that starts outside them is kept "
                                   "exactly. With --keep, only the lower levels of those bars are regenerated: "
                                   "--keep melody keeps IN.mid's Melody track in every bar and writes new "
                                   "accompaniment around it; --keep chords keeps IN.mid's chord markers.")
    prompt_options(p)
    p.add_argument("--bars", type=_arg(controls.bar_ranges), required=True, metavar="16-32[,40-48]",
                   help="bars to regenerate, counted from 1, both ends included")
    p.add_argument("--keep", type=_arg(_keep), default=None, metavar="melody,chords",
                   help="what the regenerated bars keep, comma-separated: melody (IN.mid's track named Melody, any "
                        "case, kept note for note; the other tracks are the prompt; needs a melody level), chords "
                        "(IN.mid's chord markers, as fractalmidi writes them, per beat; bars without a chord are "
                        "free; needs a chord level)")
    generation_options(p, "IN_inpainted")
    p.set_defaults(func=cmd_inpaint)

    p = sub.add_parser("continue", help="add bars after a MIDI file, keeping all of it",
                       description="Continue IN.mid by N bars; the whole input is kept note for note.")
    prompt_options(p)
    p.add_argument("--bars", type=_arg(lambda t: controls.bars(t, name="bars to add")), required=True, metavar="N",
                   help=f"bars to add, 1-{controls.MAX_BARS} (the input and these at most the model's max_bars)")
    p.add_argument("--time-signature", type=_arg(controls.time_signature), default=None,
                   help="time signature of the new bars (default: the input's last bar)")
    generation_options(p, "IN_continued")
    p.set_defaults(func=cmd_continue)

    p = sub.add_parser("arrange", help="write an accompaniment for a melody, keeping it note for note",
                       description="Arrange the melody of IN.mid: every melody note is kept exactly in the Melody "
                                   "track, the Piano track is generated around it (chords, harmony, notes). The "
                                   "melody is the --track named, else a track named Melody (any case), else the "
                                   "whole file if no two of its notes overlap; a melody track whose notes overlap "
                                   "is made one line (of notes starting together the highest is kept, a note "
                                   "still sounding when the next starts ends there), and said so. The piece has "
                                   "the bars the melody lies on (the file's time signatures, or its beat file), "
                                   "with its tempo bar by bar; --bars N may add free bars after it. Needs a model "
                                   "with a melody level.")
    p.add_argument("--melody", dest="input", required=True, metavar="IN.mid", help="the MIDI file holding the melody")
    p.add_argument("--track", metavar="NAME|NUMBER", help="the melody's track in IN.mid, by name or number (from 0)")
    p.add_argument("--beats", metavar="FILE", help="beat annotation of IN.mid (default: one beside it, see inspect)")
    p.add_argument("--no-beats", action="store_true", help="ignore beat files beside IN.mid")
    p.add_argument("--bars", type=_arg(controls.bars), default=None, metavar="N",
                   help="bars of the piece: the melody's (default), or more, the ones after it free; --form and "
                        "--chords must cover the same bars")
    generation_options(p, "IN_arranged")
    p.set_defaults(func=cmd_arrange)


    p = sub.add_parser("push", help="upload a model folder to the Hugging Face Hub with its code",
                       description="Uploads MODEL_DIR (config, generation config, weights, model card and the "
                                   "folder's other files) with this package's model code, so that "
                                   "AutoModel.from_pretrained(REPO_ID, trust_remote_code=True) works without the "
                                   "package. Creates the repo if missing; logs in with `hf auth login` or HF_TOKEN.")
    p.add_argument("model_dir", metavar="MODEL_DIR", help="a saved model folder (config.json, model.safetensors)")
    p.add_argument("repo_id", metavar="REPO_ID", help="the Hub model repo, NAMESPACE/NAME (or NAME: your namespace)")
    p.add_argument("--private", action="store_true", help="create the repo private (an existing repo keeps its visibility)")
    p.add_argument("--revision", metavar="BRANCH", help="the branch to push to (created if missing; default: main)")
    p.add_argument("--commit-message", metavar="TEXT", help="the commit message")
    p.set_defaults(func=cmd_push)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (InputError, ValueError) as e:  # ValueError: the model refusing an argument, with its reason
        print(f"fractalmidi: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fractalmidi: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
