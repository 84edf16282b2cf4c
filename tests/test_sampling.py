"""Tests for fractalmidi.sampling: schedules, per-iteration counts, temperature, CFG, seeded
sampling, MaskGIT re-masking and refinement masks. All CPU, all fast."""

import math

import pytest
import torch

from fractalmidi import sampling as S


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def empirical_entropy(samples: torch.Tensor, num_classes: int) -> float:
    """Entropy (nats) of the histogram of integer samples."""
    p = torch.bincount(samples.flatten(), minlength=num_classes).double()
    p = p[p > 0] / p.sum()
    return float(-(p * p.log()).sum())


# --------------------------------------------------------------------------- schedules
@pytest.mark.parametrize("schedule", S.SCHEDULES)
def test_mask_ratio_endpoints_and_monotone(schedule):
    assert S.mask_ratio(0.0, schedule) == pytest.approx(1.0)
    assert S.mask_ratio(1.0, schedule) == pytest.approx(0.0, abs=1e-12)
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    r = S.mask_ratio(t, schedule)
    assert r.shape == t.shape
    assert bool((r[1:] < r[:-1]).all())  # strictly decreasing
    # the tensor and float paths agree
    for x in (0.1, 0.37, 0.9):
        assert float(S.mask_ratio(torch.tensor(x, dtype=torch.float64), schedule)) == pytest.approx(
            S.mask_ratio(x, schedule)
        )


def test_mask_ratio_values():
    assert S.mask_ratio(0.5, "cosine") == pytest.approx(math.cos(math.pi / 4))
    assert S.mask_ratio(0.25, "linear") == pytest.approx(0.75)
    assert S.mask_ratio(0.5, "square") == pytest.approx(0.75)
    assert S.mask_ratio(0.5, "cubic") == pytest.approx(0.875)


def test_mask_ratio_errors():
    with pytest.raises(ValueError, match="cosine.*linear"):
        S.mask_ratio(0.5, "exp")
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            S.mask_ratio(bad)
    with pytest.raises(ValueError):
        S.mask_ratio(torch.tensor([0.2, 1.2]))


# --------------------------------------------------------------------------- masked counts
def masked_counts(n, it, schedule="cosine"):
    """The counts of one row."""
    if not isinstance(it, int):
        raise ValueError(f"num_iterations must be an integer, got {it}")
    return S.masked_counts_batched(torch.tensor([n]), it, schedule)[:, 0].tolist()


PAIRS = [(n, it) for n in (0, 1, 2, 3, 5, 7, 16, 64, 100, 257, 1000) for it in (1, 2, 3, 4, 8, 12, 16, 50)]


@pytest.mark.parametrize("schedule", S.SCHEDULES)
def test_masked_counts_properties(schedule):
    for n, it in PAIRS:
        c = masked_counts(n, it, schedule)
        assert len(c) == it and c[-1] == 0 and all(isinstance(x, int) for x in c)
        prev = n
        for x in c:
            assert 0 <= x <= prev
            if prev > 0:
                assert x <= prev - 1, (n, it, c)  # at least one token unmasked while any remain
            prev = x
        if n >= it:
            # strictly decreasing from n: every iteration has work to do
            assert all(b < a for a, b in zip([n] + c[:-1], c)), (n, it, c)


def test_masked_counts_follow_schedule():
    # away from the edges the counts are the schedule's floor(n * ratio)
    n, it = 1000, 10
    c = masked_counts(n, it, "cosine")
    for i in range(it - 1):
        assert c[i] == math.floor(n * math.cos(math.pi / 2 * (i + 1) / it))
    assert masked_counts(10, 5, "linear") == [8, 6, 4, 2, 0]
    # cosine unmasks few tokens early and many late
    steps = [a - b for a, b in zip([n] + c[:-1], c)]
    assert steps[0] < steps[-1]


def test_masked_counts_edge_cases():
    assert masked_counts(0, 5) == [0, 0, 0, 0, 0]
    assert masked_counts(7, 1) == [0]
    assert masked_counts(1, 4) == [0, 0, 0, 0]
    assert masked_counts(3, 6) == [2, 1, 0, 0, 0, 0]
    assert masked_counts(4, 4) == [3, 2, 1, 0]
    for bad_it in (0, -1, 2.5):
        with pytest.raises(ValueError, match="num_iterations"):
            masked_counts(10, bad_it)
    with pytest.raises(ValueError, match="num_tokens"):
        masked_counts(-1, 4)


@pytest.mark.parametrize("schedule", S.SCHEDULES)
def test_masked_counts_batched_matches_per_sequence(schedule):
    tokens = [n for n, _ in PAIRS[:: len(PAIRS) // 11]] + [0, 1, 3, 31, 500]
    t = torch.tensor(tokens)
    for it in (1, 2, 5, 8, 16, 50):
        out = S.masked_counts_batched(t, it, schedule)
        assert out.shape == (it, len(tokens)) and out.dtype == torch.int64
        for b, n in enumerate(tokens):
            assert out[:, b].tolist() == masked_counts(n, it, schedule)


def test_masked_counts_batched_errors():
    with pytest.raises(ValueError):
        S.masked_counts_batched(torch.tensor([1.0, 2.0]), 4)
    with pytest.raises(ValueError):
        S.masked_counts_batched(torch.tensor([[1, 2]]), 4)
    with pytest.raises(ValueError, match=">= 0"):
        S.masked_counts_batched(torch.tensor([3, -1]), 4)


# --------------------------------------------------------------------------- temperature and CFG
def test_apply_temperature():
    x = torch.tensor([[1.0, -2.0, 4.0]])
    assert torch.equal(S.apply_temperature(x, 1.0), x)
    assert torch.allclose(S.apply_temperature(x, 2.0), x / 2)
    for bad in (0, 0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="> 0") as e:
            S.apply_temperature(x, bad)
        assert repr(bad) in str(e.value)  # the message names the value
    for fn in (S.sample_categorical, S.sample_bernoulli):
        with pytest.raises(ValueError, match="> 0"):
            fn(x, 0.0, gen(0))


def test_cfg_logits():
    cond = torch.randn(2, 5, 7, generator=gen(0))
    uncond = torch.randn(2, 5, 7, generator=gen(1))
    assert torch.allclose(S.cfg_logits(cond, uncond, 1.0), cond)
    assert torch.allclose(S.cfg_logits(cond, uncond, 0.0), uncond)
    assert torch.allclose(S.cfg_logits(cond, uncond, 3.0), 3 * cond - 2 * uncond, atol=1e-6)
    with pytest.raises(ValueError):
        S.cfg_logits(cond, uncond[:, :4], 2.0)
    with pytest.raises(ValueError):
        S.cfg_logits(cond, uncond, float("nan"))


# --------------------------------------------------------------------------- categorical
def test_sample_categorical_shapes_and_probs():
    logits = torch.randn(3, 10, 6, generator=gen(0))
    s, p = S.sample_categorical(logits, 1.5, gen(1))
    assert s.shape == (3, 10) and s.dtype == torch.int64 and p.shape == (3, 10)
    expect = torch.softmax(logits / 1.5, -1).gather(-1, s[..., None])[..., 0]
    assert torch.allclose(p, expect)
    assert bool(((s >= 0) & (s < 6)).all())


def test_sample_categorical_matches_distribution():
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
    s, _ = S.sample_categorical(logits.expand(40000, 4), 1.0, gen(0))
    freq = torch.bincount(s, minlength=4).double() / s.numel()
    assert torch.allclose(freq, torch.softmax(logits.double(), -1), atol=0.01)


def test_sample_categorical_never_picks_neg_inf():
    logits = torch.tensor([0.0, float("-inf"), 0.0, float("-inf")]).expand(5000, 4)
    s, p = S.sample_categorical(logits, 3.0, gen(0))
    assert set(s.unique().tolist()) == {0, 2}
    assert torch.allclose(p, torch.full_like(p, 0.5))


def test_higher_temperature_gives_higher_entropy():
    logits = torch.tensor([3.0, 1.5, 0.5, 0.0, -1.0, -2.0]).expand(20000, 6)
    ents = [empirical_entropy(S.sample_categorical(logits, t, gen(0))[0], 6) for t in (0.25, 0.5, 1.0, 2.0, 5.0)]
    assert all(b > a for a, b in zip(ents, ents[1:])), ents


def test_tiny_temperature_is_argmax():
    logits = torch.randn(4, 50, 9, generator=gen(3))
    s, p = S.sample_categorical(logits, 1e-4, gen(0))
    assert torch.equal(s, logits.argmax(-1))
    assert bool((p > 0.99).all())


def test_categorical_seeded():
    logits = torch.randn(2, 64, 12, generator=gen(0))
    a = S.sample_categorical(logits, 1.0, gen(7))
    b = S.sample_categorical(logits, 1.0, gen(7))
    c = S.sample_categorical(logits, 1.0, gen(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_generator_is_used_not_global_rng():
    logits = torch.randn(2, 64, 12, generator=gen(0))
    torch.manual_seed(1)
    a = S.sample_categorical(logits, 1.0, gen(7))[0]
    torch.manual_seed(2)
    b = S.sample_categorical(logits, 1.0, gen(7))[0]
    assert torch.equal(a, b)
    # and the global RNG is not advanced by a seeded call
    torch.manual_seed(3)
    x = torch.rand(3)
    torch.manual_seed(3)
    S.sample_bernoulli(torch.zeros(10), 1.0, gen(0))
    S.choose_tokens_to_keep_masked(torch.rand(2, 8, generator=gen(1)), torch.ones(2, 8, dtype=torch.bool), 3, gen(0), "random")
    S.refine_mask(torch.ones(2, 8, dtype=torch.bool), 0.5, gen(0))
    assert torch.equal(torch.rand(3), x)


# --------------------------------------------------------------------------- bernoulli
def test_sample_bernoulli():
    logits = torch.randn(3, 16, 88, generator=gen(0))
    s, conf = S.sample_bernoulli(logits, 1.0, gen(1))
    assert s.shape == logits.shape and s.dtype == torch.bool and conf.shape == logits.shape
    p = torch.sigmoid(logits)
    assert torch.allclose(conf, torch.where(s, p, 1 - p))
    # frequency matches sigmoid(logit / T)
    x = torch.tensor([-1.0, 0.0, 2.0])
    s, _ = S.sample_bernoulli(x.expand(40000, 3), 2.0, gen(2))
    assert torch.allclose(s.double().mean(0), torch.sigmoid(x.double() / 2), atol=0.01)
    # seeded
    a = S.sample_bernoulli(logits, 1.0, gen(5))[0]
    assert torch.equal(a, S.sample_bernoulli(logits, 1.0, gen(5))[0])
    assert not torch.equal(a, S.sample_bernoulli(logits, 1.0, gen(6))[0])
    # tiny temperature thresholds at 0
    assert torch.equal(S.sample_bernoulli(logits, 1e-5, gen(0))[0], logits > 0)


def test_bernoulli_temperature_raises_variety():
    x = torch.tensor([2.5]).expand(20000)
    rates = [S.sample_bernoulli(x, t, gen(0))[0].double().mean().item() for t in (0.5, 1.0, 4.0)]
    # the "on" rate moves towards 0.5 as temperature grows
    assert rates[0] > rates[1] > rates[2] > 0.5


# --------------------------------------------------------------------------- re-masking
def random_masked(B: int, L: int, seed: int, frac: float = 0.6) -> torch.Tensor:
    return torch.rand(B, L, generator=gen(seed)) < frac


@pytest.mark.parametrize("mode", ["confidence", "random"])
def test_keep_masked_counts_and_never_remasks_known(mode):
    for seed in range(20):
        B, L = 4, 37
        masked = random_masked(B, L, seed)
        conf = torch.rand(B, L, generator=gen(100 + seed))
        avail = masked.sum(-1)
        k = (avail.double() * torch.rand(B, generator=gen(200 + seed), dtype=torch.float64)).long()
        out = S.choose_tokens_to_keep_masked(conf, masked, k, gen(seed), mode)
        assert out.shape == (B, L) and out.dtype == torch.bool
        assert not bool((out & ~masked).any())  # known positions never re-masked
        assert torch.equal(out.sum(-1), k)  # exactly num_to_mask per row


def test_keep_masked_picks_least_confident():
    B, L = 3, 40
    masked = random_masked(B, L, 0)
    conf = torch.rand(B, L, generator=gen(1))
    conf_known_low = conf.masked_fill(~masked, 0.0)  # known positions even less confident
    k = torch.tensor([5, 0, int(masked[2].sum())])
    out = S.choose_tokens_to_keep_masked(conf_known_low, masked, k, gen(0), "confidence")
    for b in range(B):
        idx = masked[b].nonzero().flatten()
        least = idx[conf[b, idx].argsort()[: k[b]]]
        expect = torch.zeros(L, dtype=torch.bool)
        expect[least] = True
        assert torch.equal(out[b], expect)


def test_keep_masked_with_int_and_full_row():
    masked = torch.ones(2, 10, dtype=torch.bool)
    conf = torch.arange(20.0).reshape(2, 10) / 20
    out = S.choose_tokens_to_keep_masked(conf, masked, 3, None, "confidence")
    assert torch.equal(out[:, :3], torch.ones(2, 3, dtype=torch.bool)) and out.sum() == 6
    # no masked positions at all: nothing to choose
    none = torch.zeros(2, 10, dtype=torch.bool)
    assert not S.choose_tokens_to_keep_masked(conf, none, 0, gen(0)).any()


def test_keep_masked_random_mode_is_seeded():
    B, L = 2, 64
    masked = torch.ones(B, L, dtype=torch.bool)
    conf = torch.rand(B, L, generator=gen(0))
    a = S.choose_tokens_to_keep_masked(conf, masked, 20, gen(1), "random")
    b = S.choose_tokens_to_keep_masked(conf, masked, 20, gen(1), "random")
    c = S.choose_tokens_to_keep_masked(conf, masked, 20, gen(2), "random")
    assert torch.equal(a, b) and not torch.equal(a, c)
    # random mode ignores confidence: every position is chosen about equally often
    hits = torch.zeros(L)
    for s in range(400):
        hits += S.choose_tokens_to_keep_masked(conf[:1], masked[:1], 16, gen(s), "random")[0].float()
    assert hits.min() > 400 * 0.25 * 0.5 and hits.max() < 400 * 0.25 * 1.6


def test_keep_masked_errors():
    masked = torch.tensor([[True, True, False]])
    conf = torch.rand(1, 3)
    with pytest.raises(ValueError, match="confidence.*random"):
        S.choose_tokens_to_keep_masked(conf, masked, 1, mode="topk")
    with pytest.raises(ValueError, match="num_to_mask"):
        S.choose_tokens_to_keep_masked(conf, masked, 3)  # only 2 masked
    with pytest.raises(ValueError, match="num_to_mask"):
        S.choose_tokens_to_keep_masked(conf, masked, -1)


def test_full_decode_loop_unmasks_everything():
    # the schedule and the re-masking step together decode every position in num_iterations
    B, L, V, it = 3, 50, 11, 8
    to_generate = random_masked(B, L, 0, 0.7)
    to_generate[1] = False  # a row with nothing to generate
    counts = S.masked_counts_batched(to_generate.sum(-1), it)
    masked = to_generate.clone()
    x = torch.full((B, L), -1)
    x[~to_generate] = 0
    g = gen(0)
    for i in range(it):
        logits = torch.randn(B, L, V, generator=g)
        tokens, conf = S.sample_categorical(logits, 1.0, g)
        x = torch.where(masked, tokens, x)
        new = S.choose_tokens_to_keep_masked(conf, masked, counts[i], g)
        assert not bool((new & ~masked).any())
        masked = new
        assert torch.equal(masked.sum(-1), counts[i])
    assert not masked.any() and bool((x >= 0).all())


# --------------------------------------------------------------------------- refinement
def test_refine_mask_respects_editable_and_ratio():
    for seed in range(20):
        B, L = 5, 33
        known = random_masked(B, L, seed, 0.9)
        editable = random_masked(B, L, 50 + seed, 0.5)
        editable[0] = False  # nothing editable in row 0
        for ratio in (0.0, 0.1, 0.3, 0.5, 0.77, 1.0):
            out = S.refine_mask(known, ratio, gen(seed), editable)
            assert out.shape == (B, L) and out.dtype == torch.bool
            assert not bool((out & ~editable).any()) and not bool((out & ~known).any())
            n = (known & editable).sum(-1).tolist()
            assert out.sum(-1).tolist() == [math.floor(ratio * m + 0.5) for m in n]
    assert torch.equal(S.refine_mask(known, 1.0, gen(0), editable), known & editable)


def test_refine_mask_rounding_and_default_editable():
    known = torch.ones(3, 10, dtype=torch.bool)
    known[1, 5:] = False  # 5 known
    known[2] = False
    out = S.refine_mask(known, 0.3, gen(0))
    assert out.sum(-1).tolist() == [3, 2, 0]  # 3.0 -> 3, 1.5 -> 2 (half up), 0
    assert not bool((out & ~known).any())


def test_refine_mask_seeded_and_uniform():
    known = torch.ones(2, 100, dtype=torch.bool)
    a = S.refine_mask(known, 0.3, gen(1))
    assert torch.equal(a, S.refine_mask(known, 0.3, gen(1)))
    assert not torch.equal(a, S.refine_mask(known, 0.3, gen(2)))
    assert not torch.equal(a[0], a[1])  # rows are chosen independently


def test_refine_mask_errors():
    known = torch.ones(1, 4, dtype=torch.bool)
    for bad in (-0.1, 1.1, float("nan")):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            S.refine_mask(known, bad, gen(0))
    with pytest.raises(ValueError, match="editable"):
        S.refine_mask(known, 0.3, gen(0), torch.ones(1, 5, dtype=torch.bool))


# --------------------------------------------------------------------------- nucleus filtering
def test_top_p_filter_keeps_the_smallest_nucleus():
    from fractalmidi.sampling import top_p_filter

    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = torch.isfinite(top_p_filter(logits, 0.75))
    assert kept.tolist() == [[True, True, False, False]]
    assert torch.isfinite(top_p_filter(logits, 0.1)).sum() == 1  # always the most probable one
    assert torch.equal(top_p_filter(logits, 1.0), logits)
    shuffled = logits[:, [2, 0, 3, 1]]
    assert torch.isfinite(top_p_filter(shuffled, 0.75)).tolist() == [[False, True, False, True]]
    with pytest.raises(ValueError, match="top_p must lie in"):
        top_p_filter(logits, 0.0)


def test_top_p_never_samples_the_tail():
    logits = torch.log(torch.tensor([0.9, 0.06, 0.04])).expand(4000, 3)
    g = torch.Generator().manual_seed(0)
    s, _ = S.sample_categorical(logits, 1.0, g, top_p=0.9)
    assert (s == 0).all()
    s, _ = S.sample_categorical(logits, 1.0, g, top_p=1.0)
    assert (s != 0).any()


# --------------------------------------------------------------------------- following a count plan
def test_fit_class_count_meets_the_target_per_group():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 12, 5, 3, generator=g)  # (N, L, K, V)
    group = torch.tensor([0] * 4 + [1] * 4 + [2] * 4)
    target = torch.tensor([[1.0, 6.0, 0.0], [15.0, 2.5, 10.0]])
    active = torch.ones(2, 12, 5, dtype=torch.bool)
    active[0, :2] = False  # these labels do not count
    offset = S.fit_class_count(logits, 1, group, target, active)
    p = torch.softmax(torch.cat([logits[..., :1], logits[..., 1:2] + offset[:, group, None, None], logits[..., 2:]], -1), -1)[..., 1]
    expected = torch.zeros(2, 3).index_add_(1, group, (p * active).sum(-1))
    assert torch.allclose(expected[:, :], target.clamp(max=20.0), atol=1e-3)
    # an impossible target saturates at the bound instead of failing
    big = S.fit_class_count(logits, 1, group, torch.full((2, 3), 1000.0), active)
    assert (big > 29).all()


def test_sample_note_states_holds_only_continue_notes():
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(3, 64, 10, 3, generator=g), -1)
    active = torch.ones(3, 64, 10, dtype=torch.bool)
    active[:, :8] = False  # known cells: a note sounding at the end of them on pitch 0
    known = torch.zeros(3, 64, 10, dtype=torch.long)
    known[:, 6, 0], known[:, 7, 0] = 1, 2
    states, chosen = S.sample_note_states(probs, active, known, g)
    assert torch.equal(states[:, :8], known[:, :8])  # known cells untouched
    prev = torch.cat([torch.zeros_like(states[:, :1]), states[:, :-1]], 1)
    assert not ((states == 2) & (prev == 0)).any()  # never a hold after silence
    # each sampled state's probability under the chain that drew it: an onset p(onset), a
    # silence after silence 1 - p(onset); with chain_confidence=False, the marginal
    p_on = probs[..., 1]
    was_silent = (prev == 0) & active
    torch.testing.assert_close(chosen[(states == 1) & active], p_on[(states == 1) & active])
    torch.testing.assert_close(chosen[(states == 0) & was_silent], 1 - p_on[(states == 0) & was_silent])
    assert ((chosen >= 0) & (chosen <= 1)).all()
    g.manual_seed(1)
    states2, marginal = S.sample_note_states(probs, active, known, g, chain_confidence=False)
    assert torch.allclose(marginal, probs.gather(-1, states2[..., None]).squeeze(-1))
    # onsets come at the model's marginal rate
    flat = torch.tensor([0.5, 0.2, 0.3]).expand(1, 4000, 1, 3)
    s, _ = S.sample_note_states(flat, torch.ones(1, 4000, 1, dtype=torch.bool), torch.zeros(1, 4000, 1, dtype=torch.long), g)
    assert abs((s == 1).float().mean().item() - 0.2) < 0.03
    # continuation p(held) / p(sounding before) = 0.3 / 0.5: held cells follow sounding ones at that rate
    sounding_before = (s[:, :-1] > 0)
    rate = ((s[:, 1:] == 2) & sounding_before).sum() / sounding_before.sum()
    assert abs(rate.item() - 0.6) < 0.05


def test_continuation_after_a_known_sounding_cell_is_the_ratio_of_predictions():
    """After a known sounding cell the continuation is p(held) / p(sounding) as predicted at
    that cell (the model reads known neighbours only coarsely), not p(held) alone."""
    g = torch.Generator().manual_seed(0)
    T, P = 2, 20000
    probs = torch.tensor([0.5, 0.2, 0.3]).expand(1, T, P, 3).clone()  # p(sounding) = 0.5, p(held) = 0.3
    active = torch.zeros(1, T, P, dtype=torch.bool)
    active[:, 1] = True
    known = torch.zeros(1, T, P, dtype=torch.long)
    known[:, 0] = 1  # every pitch starts a note at step 0
    for ratio, expected in ((True, 0.6), (False, 0.3)):
        s, _ = S.sample_note_states(probs, active, known, g, known_prev_ratio=ratio)
        assert abs((s[:, 1] == 2).float().mean().item() - expected) < 0.02, (ratio, expected)
    known[:, 0, : P // 2] = 0  # silence before: never a hold
    s, _ = S.sample_note_states(probs, active, known, g)
    assert not (s[:, 1, : P // 2] == 2).any()


def test_a_hold_fixed_before_its_neighbour_is_not_cut_off():
    """Iterative decoding may fix a held cell before the cell in front of it: that cell must
    then sound, bridging a short gap back to the note (no new onset) or starting the note."""
    probs = torch.tensor([0.98, 0.01, 0.01]).expand(1, 6, 2, 3).clone()  # the model expects silence
    active = torch.ones(1, 6, 2, dtype=torch.bool)
    known = torch.zeros(1, 6, 2, dtype=torch.long)
    active[0, 0, 0], known[0, 0, 0] = False, 1  # pitch 0: an onset at 0 ...
    active[0, 3, 0], known[0, 3, 0] = False, 2  # ... and a hold fixed at 3: bridged by holds at 1, 2
    active[0, 4, 1], known[0, 4, 1] = False, 2  # pitch 1: a hold at 4 with nothing before: onset at 3
    g = torch.Generator().manual_seed(0)
    states, _ = S.sample_note_states(probs, active, known, g)
    assert states[0, :4, 0].tolist() == [1, 2, 2, 2]
    assert states[0, 3, 1] == 1 and states[0, 4, 1] == 2


def _top_p_by_sorting(logits, top_p):
    """The reference nucleus: sort, keep the classes before the mass reaches top_p."""
    ordered, order = logits.sort(dim=-1, descending=True, stable=True)
    probs = ordered.softmax(-1)
    drop = probs.cumsum(-1) - probs >= top_p
    return torch.full_like(logits, float("-inf")).scatter(-1, order, ordered.masked_fill(drop, float("-inf")))


@pytest.mark.parametrize("V", [2, 3, 5, 8, 12])
def test_top_p_without_sorting_equals_sorting(V):
    """Few classes (note states) take the pairwise path, many take the sort: both are the nucleus."""
    from fractalmidi.sampling import top_p_filter

    torch.manual_seed(V)
    logits = torch.randn(64, 33, V) * 2
    for p in (0.3, 0.75, 0.9, 0.99):
        got = top_p_filter(logits, p)
        assert torch.equal(torch.isfinite(got), torch.isfinite(_top_p_by_sorting(logits, p))), (V, p)
        assert torch.equal(got[torch.isfinite(got)], logits[torch.isfinite(got)])
    ties = torch.zeros(4, 3)  # equal classes: the lower index ranks first
    assert torch.isfinite(top_p_filter(ties, 0.5)).tolist() == [[True, True, False]] * 4


def test_softmax_classes_is_softmax_with_contiguous_class_slices():
    from fractalmidi.sampling import softmax_classes

    x = torch.randn(2, 50, 88, 3)
    p = softmax_classes(x)
    torch.testing.assert_close(p, x.softmax(-1))
    assert all(p[..., k].is_contiguous() for k in range(3))


def test_fit_class_count_counts_only_active_positions():
    """With some positions inactive (already decoded), the fitted expectation over the active
    ones is the target, and inactive positions do not move it."""
    from fractalmidi.sampling import fit_class_count

    torch.manual_seed(0)
    logits = torch.randn(2, 32, 10, 3)
    group = torch.arange(32) // 8
    active = torch.rand(2, 32, 10) < 0.5
    active[:, 8:16] = False  # group 1 has nothing to sample
    target = torch.tensor([[3.0, 5.0, 4.0, 2.0], [1.0, 0.0, 6.0, 3.0]])
    offset = fit_class_count(logits, 1, group, target, active)
    margin = logits[..., 1] - torch.logsumexp(logits[..., [0, 2]], -1)
    expected = torch.zeros(2, 4).index_add_(1, group, (torch.sigmoid(margin + offset[:, group, None]) * active).sum(-1))
    for g in (0, 2, 3):
        torch.testing.assert_close(expected[:, g], target[:, g], atol=1e-3, rtol=0)
    logits2 = logits.clone()
    logits2[~active] += 5.0  # what inactive labels say does not matter
    torch.testing.assert_close(fit_class_count(logits2, 1, group, target, active), offset)
