"""Song metrics: chord recognition and adherence, form adherence, and scripts/evaluate_model.py
with them on the POP909 sample (built here with its structure annotations)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fractalmidi.errors import InputError
from fractalmidi.metrics import chord_adherence, form_adherence, recognise_chords, reduce_quality
from fractalmidi.piece import Piece
from fractalmidi.structure import BarLabels

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"


def chord_notes(pitches, start, end, velocity=80):
    return [[p, start, end, velocity] for p in pitches]


# ------------------------------------------------------------------------- recognise_chords
def test_a_c_major_bar_is_c_major_and_an_a_minor_bar_a_minor():
    c_major = Piece.from_bars([(4, 4)], notes=chord_notes([60, 64, 67], 0, 16))
    assert recognise_chords(c_major) == [(0, "maj")] * 4
    a_minor = Piece.from_bars([(4, 4)], notes=chord_notes([57, 60, 64], 0, 16))
    assert recognise_chords(a_minor) == [(9, "min")] * 4
    # inversions and spread voicings: the pitch classes decide, not the order
    first_inversion = Piece.from_bars([(4, 4)], notes=chord_notes([52, 67, 72], 0, 16))
    assert recognise_chords(first_inversion) == [(0, "maj")] * 4


def test_the_bass_decides_a_borderline_beat_and_a_silent_beat_has_no_chord():
    # C, E, G and A for one beat each: C major and A minor hold three of the four equally;
    # the lowest note decides: an A bass counted twice outweighs G (A minor 16, C major 12); a C
    # bass, in both triads, leaves them tied (16 each) and the tie goes to the root in the bass
    upper = chord_notes([64, 67, 72], 0, 4)  # E G C above
    a_bass = Piece.from_bars([(4, 4)], notes=upper + chord_notes([57], 0, 4))
    c_bass = Piece.from_bars([(4, 4)], notes=chord_notes([64, 67, 69], 0, 4) + chord_notes([48], 0, 4))
    assert recognise_chords(a_bass) == [(9, "min"), None, None, None]
    assert recognise_chords(c_bass) == [(0, "maj"), None, None, None]


def test_weights_are_durations_in_the_beat():
    # A (the bass, counted twice), C, E, G in one beat; whichever of A and G sounds longer wins.
    # A for 1 step, G for 3: A 2, C 4, E 4, G 3 -> C major 11 beats A minor 10
    short_a = chord_notes([60, 64], 0, 4) + [[57, 0, 1, 80], [67, 1, 4, 80]]
    assert recognise_chords(Piece.from_bars([(4, 4)], notes=short_a))[0] == (0, "maj")
    # A for 4 steps, G for 1: A 8, C 4, E 4, G 1 -> A minor 16 beats C major 9
    long_a = chord_notes([60, 64], 0, 4) + [[57, 0, 4, 80], [67, 3, 4, 80]]
    assert recognise_chords(Piece.from_bars([(4, 4)], notes=long_a))[0] == (9, "min")
    # a note held over a beat line counts in both beats, for its steps in each
    held = [[60, 2, 6, 80], [64, 2, 6, 80], [67, 2, 6, 80], [69, 4, 5, 80], [57, 5, 8, 80]]
    assert recognise_chords(Piece.from_bars([(4, 4)], notes=held))[:2] == [(0, "maj"), (9, "min")]


def test_reduce_quality():
    for q in ("min", "min7", "min6", "dim", "dim7", "hdim7", 1):
        assert reduce_quality(q) == "min"
    for q in ("maj", "7", "maj7", "aug", "sus2", "sus4", "sus4(b7)", "maj6", 0):
        assert reduce_quality(q) == "maj"
    assert reduce_quality("N") is None and reduce_quality(None) is None and reduce_quality(-1) is None


# ------------------------------------------------------------------------- chord_adherence
def test_chord_adherence_is_one_on_a_matching_piece_and_zero_on_a_wrong_one():
    # bar 1: C major, bar 2: A minor 7 (played A C E G), bar 3 no chord asked
    notes = chord_notes([48, 64, 67, 72], 0, 16) + chord_notes([45, 60, 64, 67], 16, 32) + chord_notes([50, 65], 32, 48)
    piece = Piece.from_bars([(4, 4)] * 3, notes=notes)
    asked = [(0, "maj", 0)] * 4 + [(9, "min7", 9)] * 4 + [None, (-1, "N"), (5, "N"), None]
    got = chord_adherence(piece, asked)
    assert got == {"chord_match": 1.0, "n_beats": 8}
    wrong = [(7, "maj")] * 4 + [(9, "maj")] * 4  # G major, A major: neither sounds
    assert chord_adherence(piece, wrong) == {"chord_match": 0.0, "n_beats": 8}
    half = [(0, "maj")] * 4 + [(4, "min")] * 4
    assert chord_adherence(piece, half)["chord_match"] == 0.5
    past_the_end = [None] * 12 + [(0, "maj")] * 4  # beats the piece does not have: misses
    assert chord_adherence(piece, past_the_end) == {"chord_match": 0.0, "n_beats": 4}
    none = chord_adherence(piece, [None, (-1, "N")])
    assert math.isnan(none["chord_match"]) and none["n_beats"] == 0


# ------------------------------------------------------------------------- form_adherence
def random_bar(rng, n=6):
    """A bass C on the downbeat (every bar shares it), then `n` random notes above."""
    return [[36, 0, 0, 80]] + [[int(rng.integers(48, 84)), int(rng.integers(0, 16)), 0, 80] for _ in range(n)]


def form_piece(form_bars, rng):
    """Bars labelled by letter; the first phrase of each letter random, later ones copy it."""
    first: dict[tuple[str, int], list] = {}
    notes = []
    for b, (letter, position) in enumerate(form_bars):
        bar = first.setdefault((letter, position), random_bar(rng)) if letter not in "Xx" else random_bar(rng)
        for p, s, _, v in bar:
            notes.append([p, 16 * b + s, 16 * b + s + 1, v])
    return Piece.from_bars([(4, 4)] * len(form_bars), notes=np.unique(np.array(notes), axis=0))


def test_form_adherence_of_copied_phrases():
    rng = np.random.default_rng(0)
    bars = [(letter, pos) for letter in "ABAB" for pos in range(2)]  # A2B2A2B2
    piece = form_piece(bars, rng)
    got = form_adherence(piece, "A2B2A2B2")
    assert got["same_letter_jaccard"] == 1.0
    assert 0 < got["different_letter_jaccard"] < 0.5  # the shared bass note, little else
    assert got["ratio"] == pytest.approx(1.0 / got["different_letter_jaccard"])
    assert (got["n_same"], got["n_different"]) == (4, 8)  # A-A, B-B at 2 positions; A-B: 4 pairs x 2
    # the same piece read with a form that pairs other bars: no longer copies
    shifted = form_adherence(piece, "A2A2B2B2")
    assert shifted["same_letter_jaccard"] < 0.5
    # X phrases never count as repeats; only bars at equal positions compare
    x = form_adherence(piece, "X2B2X2B2")
    assert x["n_same"] == 2 and x["same_letter_jaccard"] == 1.0 and x["n_different"] == 8
    with pytest.raises(Exception, match="8"):
        form_adherence(piece, "A2B2")


def test_form_adherence_takes_row_labels_with_masked_bars():
    rng = np.random.default_rng(1)
    piece = form_piece([(letter, pos) for letter in "ABAB" for pos in range(2)], rng)
    labels = BarLabels(["A", "A", "", "", "A", "A", "B", "B"], np.array([0, 0, -1, -1, 2, 2, 3, 3]),
                       np.array([0, 1, -1, -1, 0, 1, 0, 1]), np.array([2, 2, 0, 0, 2, 2, 2, 2]), np.zeros(8, bool))
    got = form_adherence(piece, labels)
    assert got["n_same"] == 2 and got["same_letter_jaccard"] == 1.0 and got["n_different"] == 4


# ------------------------------------------------------------------------- the script
def import_script():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import evaluate_model
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    return evaluate_model


def test_bar_chord_lists_split_each_bar_evenly_as_generate_does():
    ev = import_script()
    piece = Piece.from_bars([(4, 4)] * 3)
    C, G, N = (0, "maj"), (7, "maj"), (-1, "N")
    per_bar, asked = ev.bar_chord_lists([C, C, C, G, None, None, None, None, C, None, N, N], piece)
    assert per_bar == [[(0, "maj", 0), (7, "maj", 7)], None, [(0, "maj", 0), (-1, "N", -1)]]
    assert asked == [C, C, G, G, None, None, None, None, C, C, N, N]


@pytest.fixture(scope="module")
def song_dataset(tmp_path_factory):
    """The POP909 sample with its structure annotations, every song in validation."""
    from fractalmidi.data import build_dataset

    out = tmp_path_factory.mktemp("songs") / "ds"
    build_dataset(DATA / "pop909", out, structure_dir=DATA / "pop909-structure", progress=False, validation_fraction=0.9)
    return out


def test_evaluate_model_reports_song_metrics(songs_model_dir, song_dataset, tmp_path, capsys):
    ev = import_script()
    out = tmp_path / "eval.json"
    ev.main(["--model", str(songs_model_dir), "--dataset", str(song_dataset), "--num-samples", "2", "--bars", "4",
             "--cfg", "1.0", "--form-adherence", "--form", "A2B2A2B2", "--chord-adherence", "--json", str(out)])
    text = capsys.readouterr().out
    for heading in ("melody_step_share", "repeated_bar_rate", "Per-bar feature Frechet distance", "Form adherence",
                    "Chord adherence", "validation songs (whole)"):
        assert heading in text
    res = json.loads(out.read_text())
    for k in ("melody_step_share", "melody_mean_leap", "bar_similarity"):
        assert all(math.isfinite(v) for v in res["metrics"][k]["generated"] + res["metrics"][k]["validation"])
    assert all(math.isfinite(v) and v >= 0 for v in res["bar_feature_frechet"].values())
    form = res["form_adherence"]
    assert form["form"] == "A2B2A2B2"
    for side in ("generated", "validation_songs"):
        for k in ("same_letter_jaccard", "different_letter_jaccard", "ratio"):
            mean, std, n = form[side][k]
            assert math.isfinite(mean) and math.isfinite(std) and n > 0
    assert form["generated"]["n_same"][0] == 4  # A2B2A2B2: 4 same-letter pairs per piece
    chords = res["chord_adherence"]
    for k in ("generated_vs_asked", "validation_windows_vs_annotation", "validation_windows_vs_asked",
              "validation_songs_vs_annotation"):
        assert 0.0 <= chords[k]["pooled"] <= 1.0 and chords[k]["n_beats"] > 0
    # the recogniser reads the real songs' annotated chords most of the time
    assert chords["validation_songs_vs_annotation"]["pooled"] > 0.6
    # 001-267 are aligned, 580 not; 267's first four bars come before its annotated chords begin
    assert chords["validation_windows_vs_annotation"]["n_windows"] == 3
    assert chords["validation_songs_vs_annotation"]["n_windows"] == 4


def test_evaluate_model_sets_decoding_fields(songs_model_dir, song_dataset, tmp_path, capsys):
    """--set FIELD=VALUE reaches every generation of the run (here a sustain that `generate`
    refuses, so the run fails naming it), is printed with the settings, and a field that is
    not a decoding one, or a value that is not JSON, stops the script before any work."""
    ev = import_script()
    common = ["--model", str(songs_model_dir), "--dataset", str(song_dataset), "--num-samples", "1", "--bars", "2",
              "--cfg", "1.0"]
    ev.main(common + ["--set", "sustain=2.5", "--set", "rhythm_repeat=1"])
    assert "sustain 2.5, rhythm_repeat 1)" in capsys.readouterr().out
    with pytest.raises(ValueError, match="sustain 9.0 is outside the allowed range"):
        ev.main(common + ["--set", "sustain=9"])
    for bad, says in (("loudness=3", "FIELD one of"), ("sustain", "FIELD one of"), ("sustain=big", "is not a number")):
        with pytest.raises(SystemExit):
            ev.main(common + ["--set", bad])
        assert says in capsys.readouterr().err


def test_frechet_terms_name_the_features_that_differ():
    """Each feature's own Frechet distance, largest first: for one column it is exactly
    `frechet_distance` of that column, and a shifted feature comes first."""
    from fractalmidi.metrics import FEATURE_NAMES, frechet_distance, frechet_terms

    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, len(FEATURE_NAMES)))
    b = rng.normal(size=(300, len(FEATURE_NAMES)))
    k = FEATURE_NAMES.index("onset_7")
    b[:, k] += 2.0  # the reference has its onset_7 shifted
    terms = frechet_terms(a, b)
    assert terms[0]["feature"] == "onset_7" and terms[0]["term"] > 3.0
    assert [t["term"] for t in terms] == sorted((t["term"] for t in terms), reverse=True)
    for t in terms[:3]:
        j = FEATURE_NAMES.index(t["feature"])
        assert t["term"] == pytest.approx(frechet_distance(a[:, [j]], b[:, [j]], ridge=0.0), rel=1e-9)
        assert t["mean"] == pytest.approx(a[:, j].mean()) and t["reference_std"] == pytest.approx(b[:, j].std(ddof=1))
    assert frechet_terms(a[:1], b) == []


def test_evaluate_model_prints_the_frechet_terms(songs_model_dir, song_dataset, capsys):
    ev = import_script()
    res = ev.main(["--model", str(songs_model_dir), "--dataset", str(song_dataset), "--num-samples", "2", "--bars", "4",
                   "--cfg", "1.0", "--frechet-terms", "5"])
    text = capsys.readouterr().out
    assert "The features that differ most" in text
    assert len(res["frechet_terms"]) == 33 and res["frechet_terms"][0]["feature"] in text
    with pytest.raises(SystemExit):
        ev.main(["--model", str(songs_model_dir), "--dataset", str(song_dataset), "--frechet-terms", "40"])


def test_evaluate_model_compares_with_the_autoregressive_baseline(songs_model_dir, song_dataset, tmp_path, capsys):
    """--compare: the baseline's pieces beside FractalMIDI's and the validation windows, every
    measure, both Frechet distances and times, which model is closer; a wrong folder fails
    before any generation."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from benchmarks.baseline import default_generation_config, remi_tokenizer, save_tokenizer, special_ids

    tokenizer = remi_tokenizer()
    ids = special_ids(tokenizer)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=4096,
                         pad_token_id=ids["PAD"], bos_token_id=ids["BOS"], eos_token_id=ids["EOS"])
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.generation_config = default_generation_config(config)
    model.generation_config.sequence_bias = [[[ids["Bar"]], 3.0]]  # untrained: open bars often, stay quick
    folder = tmp_path / "ar"
    model.save_pretrained(folder)
    save_tokenizer(tokenizer, folder)
    ev = import_script()
    res = ev.main(["--model", str(songs_model_dir), "--dataset", str(song_dataset), "--num-samples", "3", "--bars", "2",
                   "--cfg", "1.0", "--compare", str(folder), "--compare-batch", "2"])
    text = capsys.readouterr().out
    assert "| measure | validation | FractalMIDI | AR baseline | closer |" in text
    cmp = res["compare"]
    assert set(cmp["metrics"]) == {k for k in ev.METRIC_KEYS if not k.startswith("n_")}
    for k, row in cmp["metrics"].items():
        v, f, a = row["validation"][0], row["fractalmidi"][0], row["ar"][0]
        if not any(math.isnan(x) for x in (v, f, a)) and abs(f - v) != abs(a - v):
            assert row["closer"] == ("FractalMIDI" if abs(f - v) < abs(a - v) else "AR"), k
    assert isinstance(cmp["frechet"]["ar"], float) and cmp["seconds_per_piece"]["ar"] > 0 and cmp["ar_tokens_per_bar"] > 0
    with pytest.raises(InputError, match="not a baseline model folder"):
        ev.main(["--model", str(songs_model_dir), "--dataset", str(song_dataset), "--compare", str(tmp_path / "none")])


def test_reference_subsets_score_what_sets_of_that_size_score():
    """reference_metrics.subset_distances: sets drawn from the validation distribution itself
    score near 0 when large and more when small (the distance grows as sets shrink); a shifted
    train distribution scores its shift; a size it cannot draw is refused."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import reference_metrics
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    rng = np.random.default_rng(1)
    validation = rng.normal(size=(4000, 3))
    same = [rng.normal(size=(30, 3)) for _ in range(100)]
    small, large = (reference_metrics.subset_distances(same, validation, k, draws=10) for k in (2, 80))
    assert large.mean() < small.mean() and large.mean() < 0.1
    shifted = [s + np.array([1.0, 0.0, 0.0]) for s in same]
    assert reference_metrics.subset_distances(shifted, validation, 80, draws=5).mean() == pytest.approx(1.0, abs=0.2)
    with pytest.raises(ValueError, match="give 2 to 100"):
        reference_metrics.subset_distances(same, validation, 101)


def test_evaluate_model_compares_with_a_baseline_run_as_a_script(songs_model_dir, song_dataset, tmp_path):
    """`python scripts/evaluate_model.py ... --compare AR_DIR` as README gives it (a subprocess
    from the repository root, so the script itself must find `benchmarks`): both models' music
    side by side, which is closer per measure, the baseline's tokens per bar and seconds."""
    import subprocess

    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from test_baseline import tiny_llama
    finally:
        sys.path.remove(str(ROOT / "tests"))
    from benchmarks.baseline import remi_tokenizer, save_tokenizer

    tokenizer = remi_tokenizer()
    ar_dir = tmp_path / "ar"
    tiny_llama(tokenizer).save_pretrained(ar_dir)
    save_tokenizer(tokenizer, ar_dir)
    out = tmp_path / "eval.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "evaluate_model.py"), "--model", str(songs_model_dir), "--dataset",
         str(song_dataset), "--num-samples", "2", "--bars", "2", "--cfg", "1.0", "--compare", str(ar_dir),
         "--compare-batch", "1", "--compare-workers", "2", "--compare-max-tokens-per-bar", "16", "--json", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| measure | validation | FractalMIDI | AR baseline | closer |" in done.stdout
    compare = json.loads(out.read_text())["compare"]
    assert compare["pieces"] == 2 and compare["ar_tokens_per_bar"] > 0
    assert set(compare["frechet"]) == {"fractalmidi", "ar"}
    assert all(m["closer"] in ("FractalMIDI", "AR", "equal") for m in compare["metrics"].values())
    assert compare["seconds_per_piece"]["ar"] > 0
    # the untrained baseline rambles: 16 tokens a bar hold fewer than 2 of its bars, and it says so
    assert compare["ar_max_tokens_per_bar"] == 16 and compare["ar_short_pieces"] == 2
    assert "did not reach 2 bars within their token bound (16 x 3" in done.stdout
    # made by two worker processes, the pieces are the ones made here, seed by seed
    here = [import_script()._baseline_batch((seed, 1, 2, 16), (tiny_llama(tokenizer), tokenizer)) for seed in (0, 1)]
    assert compare["ar_workers"] == 2
    assert compare["ar_tokens"] == [t for r in here for t in r[1]] and compare["ar_bars_made"] == [b for r in here for b in r[2]]
