"""The rhythm level: onsets per step as one token, and the note level starting exactly those."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fractalmidi.configuration_fractalmidi import FractalMIDIConfig
from fractalmidi.generation_fractalmidi import Grid
from fractalmidi.modeling_fractalmidi import FractalMIDIModel, RhythmLevel, bar_lengths
from fractalmidi.sampling import choose_exactly, fit_count_tilt
from fractalmidi.training import batch_to_tensors
from song_levels import SONGS_TINY, build_song_dataset, make_batch, tiny_model


# ----------------------------------------------------------------------------- sampling
def test_fit_count_tilt_gives_each_group_its_expected_sum():
    torch.manual_seed(0)
    logits = torch.randn(2, 12, 5)
    group = torch.tensor([0] * 6 + [1] * 6)
    active = torch.ones(2, 12, dtype=torch.bool)
    active[1, :3] = False
    values = torch.arange(5.0)
    target = torch.tensor([[3.0, 20.0], [1.0, 9.0]])
    tilt = fit_count_tilt(logits, values, group, target, active)
    expected = (torch.softmax(logits + tilt[:, group, None] * values, -1) * values).sum(-1) * active
    sums = torch.zeros(2, 2).index_add_(1, group, expected)
    torch.testing.assert_close(sums, target, atol=1e-3, rtol=1e-3)
    # a class the caller forbade (-inf) stays impossible whatever the tilt
    logits[..., 4] = float("-inf")
    tilt = fit_count_tilt(logits, values, group, torch.full((2, 2), 30.0), active)
    assert torch.softmax(logits + tilt[:, group, None] * values, -1)[..., 4].max() == 0


def test_choose_exactly_picks_that_many_of_the_active_by_their_scores():
    g = torch.Generator().manual_seed(0)
    scores = torch.tensor([[5.0, 0.0, 0.0, -5.0, 9.0]]).expand(4000, -1)
    active = torch.tensor([True, True, True, True, False]).expand(4000, -1)
    count = torch.full((4000,), 2)
    chosen = choose_exactly(scores, count, active, g)
    assert (chosen.sum(-1) == 2).all() and not chosen[:, 4].any()  # never an inactive one
    share = chosen.float().mean(0)
    assert share[0] > 0.95 and abs(share[1] - share[2]) < 0.05 and share[3] < 0.05  # by the scores
    few = choose_exactly(scores[:1], torch.tensor([7]), active[:1], g)
    assert few.tolist() == [[True, True, True, True, False]]  # asked for more than are active: all
    again = choose_exactly(scores[:8], count[:8], active[:8], torch.Generator().manual_seed(3))
    assert torch.equal(again, choose_exactly(scores[:8], count[:8], active[:8], torch.Generator().manual_seed(3)))


# ----------------------------------------------------------------------------- the level
@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    return build_song_dataset(tmp_path_factory.mktemp("rhythm"))


def test_targets_are_onsets_per_step_capped():
    c = FractalMIDIConfig.from_json_file(SONGS_TINY)
    level = RhythmLevel(c)
    states = torch.zeros(1, 6, c.num_pitches, dtype=torch.long)
    states[0, 0, :3] = 1
    states[0, 1, :3] = 2  # held: no onset
    states[0, 2, :20] = 1
    states[0, 4, 5] = 1
    grid = Grid(torch.tensor([[4, 4]]), torch.ones(1, 2, dtype=torch.bool), torch.tensor([[0, 0, 0, 0, 1, 1]]),
                torch.tensor([[0, 1, 2, 3, 0, 1]]), torch.tensor([[True] * 5 + [False]]))
    assert level.targets({"states": states}, grid).tolist() == [[3, 0, c.rhythm_max_count, 0, 1, -1]]
    assert level.vocab_size == c.rhythm_max_count + 1 and not level.feeds_below


def test_the_note_level_starts_exactly_the_notes_the_rhythm_level_asks(songs_model):
    """Every generated step starts as many notes as its rhythm token says (the melody's
    included), and the rhythm level's state conditions no level: the note level's condition
    has the width it had without it, so a model trained without the level keeps its weights."""
    out = songs_model.generate(4, seed=3, refine_rounds=1)
    onsets = (out.states == 1).sum(-1)
    assert out.rhythm.shape == onsets.shape
    assert torch.equal(onsets, out.rhythm)
    c = songs_model.config
    width = sum(getattr(c, f) for f in ("structure_hidden_size", "chord_hidden_size", "harmony_hidden_size",
                                         "melody_hidden_size"))
    assert songs_model.notes.cond_proj.in_features == width
    without = FractalMIDIConfig(**{**c.to_dict(), "levels": [lv for lv in c.levels if lv != "rhythm"],
                                   "num_iterations": [2] * (len(c.levels) - 1)})
    assert FractalMIDIModel(without).notes.cond_proj.in_features == width
    # passes: the rhythm level's iterations and refinement, no pass to condition the note level
    both = songs_model.generate(4, seed=3, refine_rounds=0, num_iterations=[1] * len(c.levels))
    assert both.num_forward_passes == 1 + (len(c.levels) - 1) * 2 - 1


def test_inpainting_keeps_the_prompts_rhythm_and_follows_the_density(songs_model):
    first = songs_model.generate(4, seed=1)
    piece = first.to_piece()
    out = songs_model.generate(prompt=piece, inpaint_bars=[(2, 3)], seed=2)
    steps = out.region
    onsets = (out.states == 1).sum(-1)[0]
    kept = (torch.from_numpy(np.bincount(piece.notes[:, 1], minlength=piece.num_steps))
            .clamp(max=songs_model.config.rhythm_max_count))
    assert torch.equal(out.rhythm[0, ~steps], kept[~steps])
    assert torch.equal(onsets[steps], out.rhythm[0, steps])


def test_frozen_levels_give_no_loss_and_the_total_is_what_trains(rows):
    model = tiny_model().train()
    batch = batch_to_tensors(make_batch(rows, list(range(2))))
    torch.manual_seed(0)
    full = model(**batch)
    assert {"structure", "chords", "harmony", "melody", "rhythm", "notes", "velocity"} <= set(full.losses)
    parts = ("chords", "harmony", "melody", "rhythm", "notes", "velocity")
    torch.testing.assert_close(full.loss, full.losses["structure"] * model.config.structure_weight
                               + sum(full.losses[k] for k in parts))
    for name in ("structure", "chords", "harmony", "melody", "notes"):
        getattr(model, name).requires_grad_(False)
    out = model(**batch)
    assert set(out.losses) == {"rhythm"} and torch.equal(out.loss, out.losses["rhythm"])
    out.loss.backward()
    assert all(p.grad is None for p in model.melody.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.rhythm.parameters())
    model.eval()
    with torch.no_grad():
        assert "notes" in model(**batch).losses  # evaluation measures every level


def test_sustain_lengthens_the_notes_and_keeps_the_onsets(songs_model):
    """`sustain` shifts only where sounding notes end: the same seed gives the same rhythm and
    the same onsets per step, with longer notes for a positive sustain, shorter for a negative."""
    def lengths(sustain):
        out = songs_model.generate(4, seed=5, sustain=sustain)
        piece = out.to_piece()
        return out, float(np.mean(piece.notes[:, 2] - piece.notes[:, 1]))

    (a, la), (b, lb), (c, lc) = lengths(0.0), lengths(3.0), lengths(-3.0)
    assert torch.equal(a.rhythm, b.rhythm) and torch.equal(a.rhythm, c.rhythm)
    for out in (a, b, c):
        assert torch.equal((out.states == 1).sum(-1), out.rhythm)
    assert lc < la < lb
    with pytest.raises(ValueError, match="sustain 5.0 is outside the allowed range -4.0-4.0"):
        songs_model.generate(2, sustain=5)


def test_top_p_within_cuts_the_pitch_tail_but_not_the_chance_of_a_note():
    """The melody's nucleus: rest 0.3, hold 0.3 and a note start 0.4 spread over 40 pitches.
    Over the whole vocabulary top-p 0.9 cuts the start to a third; within the pitches it keeps
    its 0.4, on the likeliest pitches."""
    from fractalmidi.sampling import top_p_filter, top_p_within

    pitch = torch.full((40,), 0.3 / 39)
    pitch[7] = 0.1
    probs = torch.cat([torch.tensor([0.3, 0.3]), pitch])
    logits = probs.log()
    flat = torch.softmax(top_p_filter(logits, 0.9), -1)
    assert flat[2:].sum() < 0.35
    within = torch.softmax(top_p_within(logits, 2, 0.9), -1)
    torch.testing.assert_close(within[:2], probs[:2])
    assert abs(float(within[2:].sum()) - 0.4) < 1e-5
    assert within[2 + 7] > probs[2 + 7] and (within[2:] == 0).sum() > 0  # the tail is cut, its mass moved
    torch.testing.assert_close(torch.softmax(top_p_within(logits, 2, 1.0), -1), probs)


def test_given_chords_add_voices_only_on_the_beats_the_rhythm_plays(songs_model):
    """With chords given, their tones may start on top of the rhythm, on beats where it has
    notes; everywhere else the onsets are exactly the rhythm's."""
    out = songs_model.generate(4, seed=1, chords=[[(0, "maj", 0)], [(9, "min", 9)], [(5, "maj", 5)], [(7, "7", 7)]])
    onsets = (out.states == 1).sum(-1)[0]
    rhythm = out.rhythm[0]
    beat = torch.arange(onsets.shape[0]) % songs_model.config.steps_per_beat == 0
    assert torch.equal(onsets[~beat], rhythm[~beat])
    assert (onsets[beat] >= rhythm[beat]).all() and (onsets[beat & (rhythm == 0)] == 0).all()


def test_temper_within_keeps_the_events_odds_and_tempers_the_pitch():
    """The melody's sampling: rest, hold and a note start keep the model's odds whatever the
    temperature; the pitch of a start is tempered (sharper below 1) and its tail cut by top_p."""
    from fractalmidi.sampling import temper_within

    torch.manual_seed(0)
    logits = torch.randn(3, 10) * 2
    probs = torch.softmax(logits, -1)
    for temperature, top_p in ((0.5, 1.0), (0.5, 0.8), (2.0, 1.0)):
        out = torch.softmax(temper_within(logits, 2, temperature, top_p), -1)
        torch.testing.assert_close(out[:, :2], probs[:, :2])
        torch.testing.assert_close(out[:, 2:].sum(-1), probs[:, 2:].sum(-1))
        if top_p == 1.0:
            torch.testing.assert_close(out[:, 2:] / out[:, 2:].sum(-1, keepdim=True),
                                       torch.softmax(logits[:, 2:] / temperature, -1))
    sharp = torch.softmax(temper_within(logits, 2, 0.5, 1.0), -1)[:, 2:]
    assert (sharp.max(-1).values > (probs[:, 2:].max(-1).values)).all()


def melody_onsets(out, index=0):
    """(T,) the melody's note starts per step (the rhythm level's fixed onsets)."""
    counts = np.zeros(out.rhythm.shape[1], np.int64)
    melody = out.melody_notes(index)
    if melody is not None and len(melody):
        np.add.at(counts, melody[:, 1], 1)
    return torch.as_tensor(counts)


def test_rhythm_repeat_one_repeats_the_first_bar_through_each_phrase(songs_model):
    """With rhythm_repeat 1 every bar of a phrase takes the rhythm of the phrase's first bar
    (at least the bar's own melody onsets), the notes start exactly that many per step, and a
    phrase's first bar is its own."""
    out = songs_model.generate(form="A4B4", seed=3, rhythm_repeat=1.0, num_samples=2)
    for i in range(2):
        rhythm, least = out.rhythm[i].cpu(), melody_onsets(out, i)
        bars = rhythm.view(8, 16)
        for first in (0, 4):
            for b in range(first + 1, first + 4):
                expected = torch.maximum(bars[first], least.view(8, 16)[b])
                assert torch.equal(bars[b], expected), (i, b)
        assert torch.equal((out.states[i] == 1).sum(-1).cpu(), rhythm)


def test_rhythm_repeat_keeps_a_given_density_and_checks_its_range(songs_model):
    """Bars whose given densities differ in class never share a rhythm: a bar asked for 2
    onsets per step does not take the rhythm of the bar before it, asked for 0.25, however
    high rhythm_repeat, and gets more onsets (the untrained model's melody starts a note on
    every step, so even the sparse bars have one per step); bars asked the same do share it.
    Out of range: a clear error before any work."""
    density = [0.25, 0.25, 2.0, 2.0]
    out = songs_model.generate(4, seed=1, rhythm_repeat=1.0, structure={"density": density})
    bars = out.rhythm[0].cpu().view(4, 16)
    least = melody_onsets(out).view(4, 16)
    assert torch.equal(bars[1], torch.maximum(bars[0], least[1]))
    assert torch.equal(bars[3], torch.maximum(bars[2], least[3]))
    assert not torch.equal(bars[2], torch.maximum(bars[1], least[2]))
    assert bars[2].sum() > bars[1].sum()
    with pytest.raises(ValueError, match="rhythm_repeat 1.5 is outside the allowed range 0.0-1.0"):
        songs_model.generate(2, rhythm_repeat=1.5)


def test_rhythm_repeat_zero_draws_nothing(songs_model):
    """rhythm_repeat 0 (the default of a model whose generation config does not set it)
    decodes exactly as before the field existed: the same seed, the same piece."""
    a = songs_model.generate(8, seed=4, rhythm_repeat=0.0)
    b = songs_model.generate(8, seed=4)
    assert songs_model.generation_config.to_dict().get("rhythm_repeat", 0.0) == 0.0
    assert torch.equal(a.rhythm, b.rhythm) and torch.equal(a.states, b.states)


# ----------------------------------------------------------------------------- the rhythm prior
def two_figures(n=400, seed=0):
    """Bars of two kinds: a running sixteenth figure (every slot) and quarter notes (slots 0, 4,
    8, 12), with a little noise."""
    rng = np.random.default_rng(seed)
    rows = np.zeros((n, 16))
    rows[: n // 2] = 1.0
    rows[n // 2:, ::4] = 1.0
    flip = rng.random(rows.shape) < 0.03
    return np.where(flip, 1 - rows, rows)


def test_fit_bar_patterns_finds_the_figures_and_checks_its_input():
    from fractalmidi.sampling import fit_bar_patterns

    prior = fit_bar_patterns(two_figures(), clusters=2)
    centres = np.array(prior["centres"])
    running = centres[:, 1].argmax()
    assert centres[running, 1::2].min() > 0.9 and centres[1 - running, 1::2].max() < 0.1
    np.testing.assert_allclose(sorted(prior["weights"]), [0.5, 0.5], atol=0.02)
    np.testing.assert_allclose(prior["marginals"][1], 0.5, atol=0.05)
    assert prior == fit_bar_patterns(two_figures(), clusters=2)  # seeded
    with pytest.raises(ValueError, match="patterns must be"):
        fit_bar_patterns(np.zeros((10, 12)), clusters=2)


def test_the_rhythm_prior_makes_a_bars_offbeats_go_together(songs_model):
    """With a prior of two figures (all sixteenths, or quarter notes only), an untrained rhythm
    level's bars come out as one figure or the other: their offbeat sixteenths are all there
    or all absent far more often than without the prior; the onsets still follow the rhythm
    tokens exactly, and the strength is checked. (A melody of whole notes is given: the
    untrained melody level would start a note on every step, which the counts must keep.)"""
    from fractalmidi.sampling import fit_bar_patterns

    melody = np.array([[72, 16 * b, 16 * b + 16, 90] for b in range(8)])

    def all_or_none(strength):
        songs_model.generation_config.rhythm_patterns = fit_bar_patterns(two_figures(), clusters=2)
        try:
            out = songs_model.generate(8, seed=2, num_samples=4, rhythm_prior=strength, melody=melody)
        finally:
            del songs_model.generation_config.rhythm_patterns
        offbeats = (out.rhythm.view(4, 8, 16)[..., 1::2] > 0).sum(-1)  # (pieces, bars)
        assert torch.equal((out.states == 1).sum(-1), out.rhythm)
        return ((offbeats == 0) | (offbeats == 8)).float().mean().item()

    without, strong = all_or_none(0.0), all_or_none(2.0)
    assert strong > 0.8 and strong > without + 0.3, (without, strong)
    with pytest.raises(ValueError, match="rhythm_prior 3.0 is outside the allowed range 0.0-2.0"):
        songs_model.generate(2, rhythm_prior=3.0)


def test_fit_rhythm_patterns_script_writes_the_prior_in_place(songs_model, tmp_path):
    """scripts/fit_rhythm_patterns.py: the prior fitted to a dataset's training bars lands in
    the model's generation_config.json (other fields kept, mode 0644, no temporary file left),
    and `generate` reads it from there."""
    import json
    import sys
    from pathlib import Path

    from song_levels import build_song_dataset

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "scripts"))
    try:
        import fit_rhythm_patterns
    finally:
        sys.path.remove(str(root / "scripts"))
    dataset = tmp_path / "ds"
    build_song_dataset(dataset)
    model_dir = tmp_path / "model"
    songs_model.save_pretrained(model_dir)
    before = json.loads((model_dir / "generation_config.json").read_text())
    prior = fit_rhythm_patterns.main([str(dataset), str(model_dir), "--clusters", "4"])
    after = json.loads((model_dir / "generation_config.json").read_text())
    assert after["rhythm_patterns"] == prior and len(prior["weights"]) == 4
    assert {k: v for k, v in after.items() if k != "rhythm_patterns"} == before
    assert oct((model_dir / "generation_config.json").stat().st_mode & 0o777) == "0o644"
    assert not list(model_dir.glob(".generation_config.*"))
    loaded = FractalMIDIModel.from_pretrained(model_dir)
    out = loaded.generate(4, seed=0, rhythm_prior=1.0)
    assert torch.equal((out.states == 1).sum(-1), out.rhythm)
    with pytest.raises(SystemExit):
        fit_rhythm_patterns.main([str(dataset), str(model_dir), "--clusters", "1"])


def test_rhythm_repeat_keeps_a_repeated_phrase_a_copy_of_its_first(songs_model):
    """With the form's repeats and rhythm_repeat together, a later phrase of a letter still has
    exactly its first phrase's rhythm (at least its own melody onsets), bar for bar."""
    out = songs_model.generate(form="A4B4A4", seed=6, rhythm_repeat=0.5, num_samples=3)
    for i in range(3):
        bars, least = out.rhythm[i].cpu().view(12, 16), melody_onsets(out, i).view(12, 16)
        for b in range(4):
            assert torch.equal(bars[8 + b], torch.maximum(bars[b], least[8 + b])), (i, b)


def test_a_malformed_rhythm_prior_is_refused_before_any_work(songs_model):
    """rhythm_patterns from a checkpoint folder that is not a prior of fit_bar_patterns: a
    clear error naming the field; with rhythm_prior 0 it is not read at all."""
    songs_model.generation_config.rhythm_patterns = {"weights": [1.0], "centres": [[0.5] * 12], "marginals": [0.5] * 16}
    try:
        with pytest.raises(ValueError, match="rhythm_patterns in the generation config"):
            songs_model.generate(2, seed=0, rhythm_prior=1.0)
        songs_model.generate(2, seed=0, rhythm_prior=0.0)
    finally:
        del songs_model.generation_config.rhythm_patterns
