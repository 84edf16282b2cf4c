"""Evaluate a FractalMIDI model against the validation songs: musical metrics and adherence.

    python scripts/evaluate_model.py --model checkpoints/fractalmidi-pop909-songs \
        --dataset data_cache/pop909 [--num-samples 64] [--bars 32] [--cfg 1.0 1.5 2.0 3.0] \
        [--form-adherence [--form i4A8B8A8B8o4]] [--chord-adherence] [--json OUT]

Prints:
1. Musical metrics, mean ± std: `--num-samples` pieces generated freely (seeds 0..K-1, 4/4,
   `--bars` bars each) next to windows of the same number of bars from the validation songs
   (one window per song, its first run of `--bars` 4/4 bars, songs the model never trained
   on), and whether each generated mean lies within one standard deviation of the validation
   mean. The melody measures are taken on the melody track where there is one: a model with a
   melody level gives its melody (`to_song`), and its validation windows then use the songs'
   annotated melody (aligned songs; the top voice for the others); without a melody level
   both sides use the top voice. The other metrics are on the whole song (accompaniment and
   melody merged). Below the table, the per-bar feature Frechet distance of the generated
   pieces to the validation windows, beside that of one half of the windows to the other half
   (a reference at the data's own spread; halves are smaller sets, so it runs somewhat high).
2. Structure adherence: for every validation window, its real per-bar density curve is given
   to `generate` as the structure to follow; the Pearson r and mean absolute error between the
   requested and the realised per-bar density (onsets per step), per guidance scale `--cfg`.
   Also the tempo error when the window's real tempo curve is given.
3. With `--form-adherence`: `--num-samples` pieces generated with the form `--form`
   (`metrics.form_adherence`: Jaccard of bars at the same place in phrases of one letter vs of
   different letters), mean ± std; beside it the validation songs' own figure (whole songs
   against their annotated phrase labels).
4. With `--chord-adherence` (a model with a chord level; the dataset built with the POP909
   structure annotations): each validation window with annotated chords gives them to
   `generate(chords=...)` (per bar, its runs of equal chords, splitting the bar evenly as
   `generate` does) and the output's recognised chords (`metrics.recognise_chords` on the whole
   song) are compared with the chords given (`metrics.chord_adherence`); beside it the real
   windows' own rate against their annotation (and against the chords as given, split), and
   over the whole validation songs.
5. With `--compare AR_MODEL` (a trained autoregressive baseline folder, `benchmarks/baseline.py`):
   the music table of both models side by side. `--num-samples` pieces of `--bars` bars from
   the baseline (its default sampling, `generate_bars`, `--compare-batch` sequences at a time
   (default 1; `--compare-workers N` makes them in N processes), seeds 0, 1, ..., at most
   `--compare-max-tokens-per-bar` x (bars + 1) tokens a piece) beside FractalMIDI's pieces (section
   1) and the validation windows, every
   measure on the whole song with the melody measures on its top voice for all three (the
   baseline has no melody track), each model's per-bar feature Frechet distance to the
   validation windows, its generation time per piece, and which model is closer per measure.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `benchmarks` (the --compare baseline) lives there

from fractalmidi import FractalMIDIModel
from fractalmidi.generation_fractalmidi import GENERATION_FIELDS
from fractalmidi.data import chord_beats, load_dataset_dir, row_to_piece
from fractalmidi.metrics import (METRIC_KEYS, chord_adherence, density_adherence, evaluate_piece,
                                 feature_frechet_distance, form_adherence, frechet_terms, pooled_bar_features, summarize,
                                 tempo_adherence)
from fractalmidi.piece import Piece, normalize_notes
from fractalmidi.structure import QUALITIES, BarLabels, parse_form


@dataclass
class Window:
    """A window of a validation song: its bars first .. first + bars - 1 as a `Piece`, and the row."""

    song_id: str
    first: int
    piece: Piece
    row: dict


def validation_windows(dataset: str, bars: int) -> list[Window]:
    """From every validation song, its first run of `bars` consecutive 4/4 bars (if any)."""
    ds = load_dataset_dir(dataset, split="validation")
    out = []
    for row in ds:
        piece = row_to_piece(row)
        four = np.all(piece.time_signatures == [4, 4], axis=1)  # (B,)
        for first in range(piece.num_bars - bars + 1):
            if four[first : first + bars].all():
                out.append(Window(row["song_id"], first, piece.crop_bars(first, first + bars), row))
                break
    return out


# ---------------------------------------------------------------------------- songs: melody, chords, form
def window_melody(w: Window) -> Piece | None:
    """The window's annotated melody as a `Piece` on its grid (notes starting in it, cut at its
    end); None when the song has no aligned melody."""
    row = w.row
    if not row.get("aligned_well", False) or not row.get("melody_pitch"):
        return None
    s0, s1 = int(row["bar_starts"][w.first]), int(row["bar_starts"][w.first]) + w.piece.num_steps
    start, end = np.asarray(row["melody_start"], np.int64), np.asarray(row["melody_end"], np.int64)
    inside = (start >= s0) & (start < s1)
    notes = np.stack([np.asarray(row["melody_pitch"], np.int64)[inside], start[inside] - s0,
                      np.minimum(end[inside], s1) - s0, np.full(int(inside.sum()), 100)], axis=1)
    notes, _ = normalize_notes(notes)
    return w.piece.replace_notes(notes)


def generated_song(result, index: int = 0) -> tuple[Piece, Piece | None]:
    """Sample `index` of a generation as (whole song, melody track or None): with a melody
    level the accompaniment and melody of `to_song` merged (`normalize_notes`), and the melody
    as its own `Piece`; else `to_piece` and None."""
    piano, melody = result.to_song(index)
    if melody is None:
        return piano, None
    merged, _ = normalize_notes(np.concatenate([piano.notes, melody]))
    return piano.replace_notes(merged), piano.replace_notes(normalize_notes(melody)[0])


def window_chords(w: Window) -> list:
    """The window's annotated chord per beat (`data.chord_beats`): (root, quality name) or
    (-1, "N") for an annotated N, None where not annotated."""
    tokens = chord_beats(w.row, w.first, w.piece.num_steps, steps_per_beat=w.piece.steps_per_beat)
    out = []
    for tok in tokens.tolist():
        if tok < 0:
            out.append(None)
        elif tok == 0:
            out.append((-1, "N"))
        else:
            root, quality = divmod(tok - 1, len(QUALITIES))
            out.append((root, QUALITIES[quality]))
    return out


def bar_chord_lists(per_beat: list, piece: Piece) -> tuple[list, list]:
    """Per-beat chords -> (`generate(chords=...)`'s per-bar lists, the per-beat chords as that
    asks for them). A bar's list holds its runs of equal consecutive annotated chords (beats
    without an annotation skipped; None for a bar with none), each (root, quality, bass = root);
    `generate` splits the bar's beats evenly among them (earlier chords take the remainder), so
    a bar C C C G is asked as C C G G: the second list is that split, beat by beat."""
    spb, starts = piece.steps_per_beat, piece.bar_starts.tolist()
    per_bar, asked = [], [None] * len(per_beat)
    for b in range(piece.num_bars):
        first, stop = -(-starts[b] // spb), -(-starts[b + 1] // spb)  # the beats starting in the bar
        runs = []
        for chord in per_beat[first:stop]:
            if chord is not None and (not runs or runs[-1] != chord):
                runs.append(chord)
        if not runs:
            per_bar.append(None)
            continue
        per_bar.append([(root, quality, root) for root, quality in runs])
        base, extra = divmod(stop - first, len(runs))
        at = first
        for i, chord in enumerate(runs):
            n = base + (1 if i < extra else 0)
            asked[at: at + n] = [chord] * n
            at += n
    return per_bar, asked


def pooled_match(rows: list[dict]) -> dict:
    """chord_adherence rows -> the share over all their beats, the mean over rows (NaN-free), beats."""
    n = sum(r["n_beats"] for r in rows)
    hits = sum(r["chord_match"] * r["n_beats"] for r in rows if r["n_beats"])
    per = [r["chord_match"] for r in rows if r["n_beats"]]
    return dict(pooled=hits / n if n else math.nan, mean=float(np.mean(per)) if per else math.nan,
                n_beats=n, n_windows=len(per))


def row_labels(row: dict) -> BarLabels | None:
    """A dataset row's annotated phrase labels (per bar; "" / -1 where masked), None if none."""
    if not any(row.get("bar_letter") or []):
        return None
    n = len(row["bar_letter"])
    return BarLabels(list(row["bar_letter"]), np.asarray(row["bar_phrase"]), np.asarray(row["bar_phrase_position"]),
                     np.asarray(row["bar_phrase_length"]), np.zeros(n, bool))


def fmt(mean: float, std: float | None = None) -> str:
    return f"{mean:.3f}" + (f" ± {std:.3f}" if std is not None else "")


# ---------------------------------------------------------------------------- main
_WORKER_BASELINE = None  # (model, tokenizer) of a --compare-workers process


def _baseline_worker_init(folder: str) -> None:
    global _WORKER_BASELINE
    from benchmarks.baseline import load_baseline

    torch.set_num_threads(1)
    _WORKER_BASELINE = load_baseline(folder)


def _baseline_batch(job: tuple, baseline=None):
    """One batch of baseline pieces: (first seed, count, bars, token bound a bar) -> pieces,
    tokens, bars made, seconds of `generate`."""
    from benchmarks.baseline import generate_bars

    start, n, bars, bound = job
    model, tokenizer = baseline or _WORKER_BASELINE
    g = generate_bars(model, tokenizer, bars, batch_size=n, seed=start, max_tokens_per_bar=bound)
    return g.pieces, g.tokens, g.bars_made, g.seconds


@torch.no_grad()  # not set_grad_enabled(False): a caller (a test) keeps its own grad mode
def compare_with_baseline(args, baseline, windows, fm_pieces, fm_seconds) -> dict:
    """Section 5: the music of FractalMIDI (`fm_pieces`, made at `fm_seconds` a piece) and of
    the autoregressive baseline side by side against the validation windows. The baseline's
    batches are the same (seeds, sizes) whether made here or by `--compare-workers` processes."""
    jobs = [(start, min(args.compare_batch, args.num_samples - start), args.bars, args.compare_max_tokens_per_bar)
            for start in range(0, args.num_samples, args.compare_batch)]
    if args.compare_workers > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(min(args.compare_workers, len(jobs)), mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_baseline_worker_init, initargs=(str(args.compare),)) as pool:
            results = list(pool.map(_baseline_batch, jobs))
    else:
        results = [_baseline_batch(job, baseline) for job in jobs]
    ar_pieces, ar_tokens, ar_bars, ar_time = [], [], [], 0.0
    for pieces, tokens, bars_made, seconds in results:
        ar_pieces += pieces
        ar_tokens += tokens
        ar_bars += bars_made
        ar_time += seconds
    real = summarize([evaluate_piece(w.piece) for w in windows])
    fm = summarize([evaluate_piece(p) for p in fm_pieces])
    ar = summarize([evaluate_piece(p) for p in ar_pieces])
    reference = [w.piece for w in windows]
    out = dict(metrics={}, ar_model=args.compare, pieces=args.num_samples, bars=args.bars,
               ar_max_tokens_per_bar=args.compare_max_tokens_per_bar,
               ar_batch=args.compare_batch, ar_tokens_per_bar=float(np.sum(ar_tokens) / max(1, np.sum(ar_bars))),
               ar_short_pieces=int(sum(b < args.bars for b in ar_bars)), ar_workers=args.compare_workers,
               ar_tokens=[int(t) for t in ar_tokens], ar_bars_made=[int(b) for b in ar_bars])
    print(f"\nFractalMIDI against the autoregressive baseline ({args.compare}): {args.num_samples} pieces of "
          f"{args.bars} bars each, their defaults, vs {len(windows)} validation windows; every measure on the whole "
          f"song, the melody measures on its top voice for all three")
    print("| measure | validation | FractalMIDI | AR baseline | closer |")
    print("|---|---|---|---|---|")
    for k in METRIC_KEYS:
        if k.startswith("n_"):
            continue
        (rm, rs, _), (fmm, fms, _), (am, as_, _) = real[k], fm[k], ar[k]
        d_fm, d_ar = abs(fmm - rm), abs(am - rm)
        closer = "FractalMIDI" if d_fm < d_ar else "AR" if d_ar < d_fm else "equal"
        out["metrics"][k] = dict(validation=[rm, rs], fractalmidi=[fmm, fms], ar=[am, as_], closer=closer)
        print(f"| {k} | {fmt(rm, rs)} | {fmt(fmm, fms)} | {fmt(am, as_)} | {closer} |")
    fd_fm = feature_frechet_distance(fm_pieces, reference)
    fd_ar = feature_frechet_distance(ar_pieces, reference)
    out["frechet"] = dict(fractalmidi=fd_fm, ar=fd_ar)
    out["seconds_per_piece"] = dict(fractalmidi=fm_seconds, ar=ar_time / max(1, args.num_samples))
    print(f"| per-bar feature Frechet distance (lower is closer) | - | {fd_fm:.3f} | {fd_ar:.3f} | "
          f"{'FractalMIDI' if fd_fm < fd_ar else 'AR'} |")
    print(f"| generation seconds per piece | - | {fm_seconds:.2f} (batch 1) | {ar_time / max(1, args.num_samples):.2f} "
          f"(batch {args.compare_batch}) | - |")
    print(f"The baseline made {out['ar_tokens_per_bar']:.1f} tokens per bar; {out['ar_short_pieces']} of its pieces "
          f"did not reach {args.bars} bars within their token bound ({args.compare_max_tokens_per_bar} x "
          f"{args.bars + 1}; their missing bars left empty).")
    return out


def parse_settings(ap, items: list[str]) -> dict:
    """`--set FIELD=VALUE` items -> {field: value}: a known decoding field, its value JSON (a bare
    word is a string); the ranges are checked by `generate` itself before any work."""
    settings = {}
    for item in items:
        field, sep, text = item.partition("=")
        field = field.strip()
        if not sep or field not in GENERATION_FIELDS:
            ap.error(f"--set {item!r}: give FIELD=VALUE with FIELD one of {', '.join(GENERATION_FIELDS)}")
        try:
            settings[field] = json.loads(text)
        except json.JSONDecodeError:
            ap.error(f"--set {item!r}: the value {text!r} is not a number, list or true/false (JSON)")
    return settings


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--dataset", required=True, help="a dataset folder from `fractalmidi build-dataset`")
    ap.add_argument("--num-samples", type=int, default=64)
    ap.add_argument("--bars", type=int, default=32)
    ap.add_argument("--temperature", type=float, default=None, help="default: the model's default_temperature")
    ap.add_argument("--top-p", type=float, default=None, help="default: the model's default_top_p")
    ap.add_argument("--iterations", type=int, nargs="+", default=None, help="decoding iterations per level")
    ap.add_argument("--refine-rounds", type=int, default=None)
    ap.add_argument("--no-follow", action="store_true", help="generate(follow_structure=False): no onset plan")
    ap.add_argument("--remask-mode", choices=["confidence", "random"], default=None,
                    help="which tokens stay masked between iterations (default: the model's config)")
    ap.add_argument("--cfg", type=float, nargs="+", default=[1.0, 1.5, 2.0, 3.0])
    ap.add_argument("--free-cfg", type=float, default=None, help="guidance for the free samples (default: the first --cfg)")
    ap.add_argument("--form-adherence", action="store_true", help="also generate --num-samples pieces with --form")
    ap.add_argument("--form", default="i4A8B8A8B8o4", help="the form for --form-adherence")
    ap.add_argument("--chord-adherence", action="store_true",
                    help="also generate on each validation window's annotated chords (a model with a chord level)")
    ap.add_argument("--frechet-terms", type=int, default=0, metavar="N",
                    help="also print the N features whose own Frechet distance is largest (0-33)")
    ap.add_argument("--compare", metavar="AR_MODEL", default=None,
                    help="also generate --num-samples pieces with this trained autoregressive baseline and print both "
                         "models' music side by side")
    ap.add_argument("--compare-batch", type=int, default=1,
                    help="the baseline's sequences sampled together (default 1, one at a time as FractalMIDI's: a "
                         "batch runs until its longest piece ends, and one piece that rambles to the token bound "
                         "holds every other; the trained baseline's first batch of 16 had not ended after 50 "
                         "minutes on one thread)")
    ap.add_argument("--compare-workers", type=int, default=1, metavar="N",
                    help="make the baseline's pieces in N processes of one thread each (default 1: here); the "
                         "same pieces, its time per piece then measured on one thread")
    ap.add_argument("--compare-max-tokens-per-bar", type=int, default=128, metavar="N",
                    help="the baseline's token bound, N x (bars + 1) a piece (default 128: more than any 32-bar "
                         "window of the training songs takes, 120 a bar at most, 72 on average; a piece that "
                         "rambles past it is counted as short and its missing bars left empty)")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="a decoding field of the generation config for every generation here, e.g. sustain=1.0 "
                         "or temperature_scale=[1,1,1,0.6,1,1] (a JSON value); may be given again")
    ap.add_argument("--json", help="also write the results as JSON here")
    args = ap.parse_args(argv)
    if not 0 <= args.frechet_terms <= 33:
        ap.error(f"--frechet-terms must be 0-33 (the per-bar features), got {args.frechet_terms}")
    if not 1 <= args.compare_batch <= 64:
        ap.error(f"--compare-batch must be 1-64, got {args.compare_batch}")
    if not 1 <= args.compare_workers <= 16:
        ap.error(f"--compare-workers must be 1-16, got {args.compare_workers}")
    if not 16 <= args.compare_max_tokens_per_bar <= 4096:
        ap.error(f"--compare-max-tokens-per-bar must be 16-4096, got {args.compare_max_tokens_per_bar}")
    settings = parse_settings(ap, args.set)
    baseline = None
    if args.compare:  # loaded first: a wrong folder fails before an hour of generation
        from benchmarks.baseline import load_baseline

        baseline = load_baseline(args.compare)
    model = FractalMIDIModel.from_pretrained(args.model).eval()
    if args.temperature is None:
        args.temperature = model.generation_config.temperature
    if args.top_p is None:
        args.top_p = model.generation_config.top_p
    if args.iterations:
        model.generation_config.num_iterations = args.iterations
    if args.refine_rounds is not None:
        model.generation_config.refine_rounds = args.refine_rounds
    if args.remask_mode:
        model.config.remask_mode = args.remask_mode
    for field, value in settings.items():
        setattr(model.generation_config, field, value)
    free_cfg = args.free_cfg if args.free_cfg is not None else args.cfg[0]
    decoding = dict(temperature=args.temperature, guidance_scale=free_cfg, top_p=args.top_p,
                    follow_structure=not args.no_follow)
    has_melody = "melody" in model.config.levels
    t0 = time.perf_counter()

    # ---- 1. free generation against the validation songs
    windows = validation_windows(args.dataset, args.bars)
    real_melodies = [window_melody(w) if has_melody else None for w in windows]
    real = [evaluate_piece(w.piece, melody=m) for w, m in zip(windows, real_melodies)]
    gen, gen_pieces = [], []
    t_gen = time.perf_counter()
    for seed in range(args.num_samples):
        piece, melody = generated_song(model.generate(num_bars=args.bars, seed=seed, **decoding))
        gen.append(evaluate_piece(piece, melody=melody))
        gen_pieces.append(piece)
    gen_seconds = (time.perf_counter() - t_gen) / max(1, args.num_samples)  # with the measuring, a little
    real_s, gen_s = summarize(real), summarize(gen)
    melody_source = (f"melody measures on the melody level's line vs the annotated melody "
                     f"({sum(m is not None for m in real_melodies)} of {len(windows)} windows, the top voice for the rest)"
                     if has_melody else "melody measures on the top voice")
    print(f"Musical metrics: {args.num_samples} generated pieces of {args.bars} bars (cfg {free_cfg}, "
          f"temperature {args.temperature}, top_p {args.top_p}, re-masking {model.config.remask_mode}, "
          f"iterations {model.generation_config.num_iterations}, refinement rounds {model.generation_config.refine_rounds}"
          f"{''.join(f', {k} {v}' for k, v in settings.items())}) "
          f"vs {len(windows)} validation windows of {args.bars} bars (4/4); {melody_source}")
    print("| metric | generated | validation | within 1 std |")
    print("|---|---|---|---|")
    rows = {}
    for k in METRIC_KEYS:
        if k.startswith("n_"):
            continue
        gm, gs, _ = gen_s[k]
        rm, rs, _ = real_s[k]
        ok = abs(gm - rm) <= rs
        rows[k] = dict(generated=[gm, gs], validation=[rm, rs], within_one_std=bool(ok))
        off = f"{abs(gm - rm) / rs:.1f} std" if rs > 0 else "std 0"
        print(f"| {k} | {fmt(gm, gs)} | {fmt(rm, rs)} | {'yes' if ok else f'no ({off})'} |")
    frechet = dict(generated_vs_validation=feature_frechet_distance(gen_pieces, [w.piece for w in windows]),
                   validation_half_vs_half=feature_frechet_distance([w.piece for w in windows[0::2]],
                                                                    [w.piece for w in windows[1::2]]))
    print(f"\nPer-bar feature Frechet distance: generated vs validation windows {frechet['generated_vs_validation']:.3f}; "
          f"validation windows, even vs odd (reference) {frechet['validation_half_vs_half']:.3f}")
    terms = None
    if args.frechet_terms:
        terms = frechet_terms(pooled_bar_features(gen_pieces), pooled_bar_features([w.piece for w in windows]))
        print(f"The features that differ most (metrics.frechet_terms; their sum, {sum(t['term'] for t in terms):.3f}, "
              f"is the distance with the correlations left out):")
        print("| feature | term | generated | validation |")
        print("|---|---|---|---|")
        for t in terms[:args.frechet_terms]:
            print(f"| {t['feature']} | {t['term']:.3f} | {fmt(t['mean'], t['std'])} | {fmt(t['reference_mean'], t['reference_std'])} |")

    # ---- 2. adherence to real structure the model never saw
    print("\nDensity adherence: the per-bar density of each validation window given as structure")
    print("| cfg | Pearson r (mean over songs) | r of all bars pooled | MAE (onsets/step) | tempo MAE (BPM) | seconds |")
    print("|---|---|---|---|---|---|")
    adherence = {}
    for scale in args.cfg:
        t1 = time.perf_counter()
        rs_, maes, req_all, got_all, tempo_err = [], [], [], [], []
        for i, w in enumerate(windows):
            density, tempo = w.piece.bar_density().tolist(), w.piece.bar_tempo().tolist()
            piece = model.generate(num_bars=args.bars, seed=1000 + i, **{**decoding, "guidance_scale": scale},
                                   structure={"density": density, "tempo": tempo}).to_piece()
            a = density_adherence(density, piece.bar_density())
            if not math.isnan(a["pearson_r"]):
                rs_.append(a["pearson_r"])
            maes.append(a["mae"])
            req_all += density
            got_all += piece.bar_density().tolist()
            tempo_err.append(tempo_adherence(tempo, piece.bar_tempo())["mae"])
        pooled = density_adherence(req_all, got_all)["pearson_r"]
        mean_r = float(np.mean(rs_)) if rs_ else math.nan
        adherence[scale] = dict(mean_r=mean_r, pooled_r=pooled, mae=float(np.mean(maes)),
                                tempo_mae=float(np.mean(tempo_err)), songs=len(windows))
        print(f"| {scale:g} | {mean_r:.3f} | {pooled:.3f} | {np.mean(maes):.3f} | {np.mean(tempo_err):.2e} | "
              f"{time.perf_counter() - t1:.0f} |")
    results = dict(metrics=rows, bar_feature_frechet=frechet, adherence=adherence)
    if baseline is not None:
        results["compare"] = compare_with_baseline(args, baseline, windows, gen_pieces, gen_seconds)
    if terms is not None:
        results["frechet_terms"] = terms

    # ---- 3. form adherence
    if args.form_adherence:
        n_form_bars = sum(p.bars for p in parse_form(args.form))
        form_rows = []
        for seed in range(args.num_samples):
            piece, _ = generated_song(model.generate(form=args.form, seed=seed, **decoding))
            form_rows.append(form_adherence(piece, args.form))
        real_rows = []
        for row in load_dataset_dir(args.dataset, split="validation"):
            labels = row_labels(row)
            if labels is not None:
                real_rows.append(form_adherence(row_to_piece(row), labels))
        gen_f, real_f = summarize(form_rows), summarize(real_rows)
        print(f"\nForm adherence: {args.num_samples} pieces generated with the form {args.form} ({n_form_bars} bars) "
              f"vs {len(real_rows)} whole validation songs against their annotated phrases")
        print("| measure | generated | validation songs |")
        print("|---|---|---|")
        for k in ("same_letter_jaccard", "different_letter_jaccard", "ratio", "n_same", "n_different"):
            print(f"| {k} | {fmt(*gen_f[k][:2])} (n {gen_f[k][2]}) | {fmt(*real_f[k][:2])} (n {real_f[k][2]}) |")
        results["form_adherence"] = dict(form=args.form, generated={k: list(v) for k, v in gen_f.items()},
                                         validation_songs={k: list(v) for k, v in real_f.items()})

    # ---- 4. chord adherence
    if args.chord_adherence:
        chords_out = {}
        annotated = [(w, window_chords(w)) for w in windows]
        annotated = [(w, c) for w, c in annotated if any(x is not None and x[0] >= 0 for x in c)]
        real_annot, real_asked, gen_asked = [], [], []
        for i, (w, per_beat) in enumerate(annotated):
            per_bar, asked = bar_chord_lists(per_beat, w.piece)
            real_annot.append(chord_adherence(w.piece, per_beat))
            real_asked.append(chord_adherence(w.piece, asked))
            if "chords" in model.config.levels:
                piece, _ = generated_song(model.generate(num_bars=args.bars, seed=2000 + i, chords=per_bar, **decoding))
                gen_asked.append(chord_adherence(piece, asked))
        whole = []
        for row in load_dataset_dir(args.dataset, split="validation"):
            if row.get("aligned_well", False) and row.get("beat_root"):
                song = row_to_piece(row)
                w = Window(row["song_id"], 0, song, row)
                whole.append(chord_adherence(song, window_chords(w)))
        chords_out["validation_windows_vs_annotation"] = pooled_match(real_annot)
        chords_out["validation_windows_vs_asked"] = pooled_match(real_asked)
        chords_out["validation_songs_vs_annotation"] = pooled_match(whole)
        print(f"\nChord adherence: recognised triad (metrics.recognise_chords) = the chord reduced to maj/min, "
              f"share of beats; {len(annotated)} validation windows with annotated chords")
        if "chords" in model.config.levels:
            chords_out["generated_vs_asked"] = pooled_match(gen_asked)
        else:
            chords_out["generated_vs_asked"] = None
            print(f"(skipped the generated side: this model has no chord level, levels {list(model.config.levels)})")
        print("| pieces | chords compared with | share of beats (pooled) | mean over windows | beats | windows |")
        print("|---|---|---|---|---|---|")
        for name, what, key in (("generated", "the chords given to generate", "generated_vs_asked"),
                                ("validation windows", "their annotation", "validation_windows_vs_annotation"),
                                ("validation windows", "the chords as given (bars split evenly)", "validation_windows_vs_asked"),
                                ("validation songs (whole)", "their annotation", "validation_songs_vs_annotation")):
            r = chords_out[key]
            if r is not None:
                print(f"| {name} | {what} | {r['pooled']:.3f} | {r['mean']:.3f} | {r['n_beats']} | {r['n_windows']} |")
        results["chord_adherence"] = chords_out
    print(f"\n{time.perf_counter() - t0:.0f} s in all")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(results, args=vars(args)), f, indent=1)
    return results


if __name__ == "__main__":
    main()
