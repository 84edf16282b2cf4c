"""The decoding maths of iterative masked prediction, apart from the network.

Every level of the hierarchy is decoded in parallel, MaskGIT / MAR style: all the positions to
generate start masked; at each of `num_iterations` iterations the network predicts every masked
position, a value is sampled for each, and the least confident of them (or a random subset, MAR's
random order) are masked again for the next iteration. How many stay masked after each iteration
follows a schedule (cosine by default). After a level is decoded, refinement ("deep sampling")
re-masks a fraction of it and predicts that again.

This module holds only that maths, as plain functions on torch tensors that tests can call alone
(in the spirit of diffusers' `scheduling_amused`): no nn.Module, no model code, imports only
torch and math, so it can travel with a Hub repo for `trust_remote_code`.

Conventions
- B = batch rows, L = positions (tokens) per row, V = vocabulary size (classes per position),
  K = labels per position for multi-label outputs (e.g. 88 pitches, each on or off).
- Masks are bool tensors; `True` means "masked" (still to be generated) unless the name says
  otherwise (`known`, `editable`).
- Randomness: every random draw takes `generator: torch.Generator | None`. With a generator, the
  draw uses it and only it, so the same seed gives the same result. The noise is drawn on the
  generator's device and then moved to the tensors' device, so a CPU generator gives the same
  numbers whether the model runs on CPU or GPU. With `generator=None` torch's global RNG of the
  tensors' device is used.
- Temperature must be > 0 everywhere (`apply_temperature`); a tiny temperature (e.g. 1e-4)
  approaches greedy argmax decoding. There is no "temperature = 0 means argmax" special case.
- Bad arguments raise ValueError with a message naming the value and what is allowed.

A typical level loop (the model code owns the loop; names here are illustrative):

    masked = to_generate.clone()                                   # (B, L) bool
    counts = masked_counts_batched(masked.sum(-1), num_iterations)  # (num_iterations, B)
    for i in range(num_iterations):
        logits = cfg_logits(model(x, cond), model(x, None), scale)  # (B, L, V)
        tokens, conf = sample_categorical(logits, temperature, generator)
        x = torch.where(masked, tokens, x)
        masked = choose_tokens_to_keep_masked(conf, masked, counts[i], generator)
"""

import math

import torch

SCHEDULES = ("cosine", "linear", "square", "cubic")
KEEP_MASKED_MODES = ("confidence", "random")
MAX_BRIDGE = 2  # sampled cells a note is bridged over to reach a known held cell (sample_note_states)


# --------------------------------------------------------------------------- schedules
def mask_ratio(progress: float | torch.Tensor, schedule: str = "cosine") -> float | torch.Tensor:
    """Fraction of the tokens still masked at `progress` in [0, 1] (0 = start, 1 = done).

    Schedules (all go from 1 at progress 0 to 0 at progress 1, decreasing):
      "cosine": cos(pi/2 * t) (MaskGIT's default; few tokens early, many late)
      "linear": 1 - t
      "square": 1 - t^2
      "cubic":  1 - t^3

    Args:
        progress: a float, or a tensor of any shape (computed elementwise).
        schedule: one of SCHEDULES.

    Returns:
        A float for a float `progress`, else a tensor of the same shape.

    Raises:
        ValueError: an unknown schedule, or a progress outside [0, 1].
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown mask schedule {schedule!r}; allowed: {', '.join(SCHEDULES)}")
    is_tensor = isinstance(progress, torch.Tensor)
    in_range = bool(((progress >= 0) & (progress <= 1)).all()) if is_tensor else 0.0 <= progress <= 1.0
    if not in_range:  # also catches NaN
        raise ValueError(f"progress must lie in [0, 1], got {progress}")
    t = progress
    if schedule == "cosine":
        ratio = torch.cos(t * (math.pi / 2)) if is_tensor else math.cos(t * math.pi / 2)
    elif schedule == "linear":
        ratio = 1 - t
    elif schedule == "square":
        ratio = 1 - t**2
    else:  # "cubic"
        ratio = 1 - t**3
    return ratio


def _check_iterations(num_iterations: int) -> None:
    if not isinstance(num_iterations, int) or num_iterations < 1:
        raise ValueError(f"num_iterations must be an integer >= 1, got {num_iterations!r}")


# A count is floor(n * ratio); the epsilon keeps 3 * (1 - 2/3) = 0.99999... from flooring to 0.
_FLOOR_EPS = 1e-9


def masked_counts_batched(
    num_tokens: torch.Tensor, num_iterations: int, schedule: str = "cosine"
) -> torch.Tensor:
    """How many of each row's `num_tokens[b]` tokens remain masked after each of `num_iterations`
    iterations (rows may differ: inpainting a few bars of one piece, a whole piece in another).

    counts[i, b] is the number still masked after iteration i (0-based), from the schedule:
    floor(num_tokens[b] * mask_ratio((i + 1) / num_iterations)), then adjusted so that
      * counts[-1] == 0 (everything is decoded at the end);
      * every iteration unmasks at least one token while tokens remain;
      * no iteration is left with nothing to do when num_tokens[b] >= num_iterations
        (counts[i] >= num_iterations - 1 - i), so then the counts strictly decrease.
    With fewer tokens than iterations one token is unmasked per iteration until none remain.

    Args:
        num_tokens: (B,) integer tensor, tokens to generate per row, >= 0.
        num_iterations: decoding iterations, >= 1.
        schedule: one of SCHEDULES.

    Returns:
        (num_iterations, B) int64 tensor on num_tokens' device; row i holds the counts still
        masked after iteration i.
    """
    _check_iterations(num_iterations)
    if num_tokens.dim() != 1:
        raise ValueError(f"num_tokens must be a (B,) tensor, got shape {tuple(num_tokens.shape)}")
    if num_tokens.dtype.is_floating_point or num_tokens.dtype == torch.bool:
        raise ValueError(f"num_tokens must be an integer tensor, got dtype {num_tokens.dtype}")
    if num_tokens.numel() and int(num_tokens.min()) < 0:
        raise ValueError(f"num_tokens must be >= 0, got {num_tokens.tolist()}")
    n = num_tokens.to(torch.int64)  # (B,)
    total = n.to(torch.float64)  # (B,) float64: the exact floor of n * ratio
    counts = []
    prev = n
    for i in range(num_iterations):
        ratio = mask_ratio((i + 1) / num_iterations, schedule)  # a Python float
        base = torch.floor(total * ratio + _FLOOR_EPS).to(torch.int64)  # (B,)
        count = torch.minimum(prev - 1, base.clamp_min(num_iterations - 1 - i)).clamp_min(0)
        if i == num_iterations - 1:
            count = torch.zeros_like(count)
        counts.append(count)
        prev = count
    return torch.stack(counts)  # (num_iterations, B)


# --------------------------------------------------------------------------- logits
def _check_temperature(temperature: float) -> None:
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """logits / temperature: higher temperature = flatter distribution = more varied samples.

    Args:
        logits: any shape (categorical logits over the last dim, or Bernoulli logits).
        temperature: a finite float > 0; 1 leaves the logits unchanged, values towards 0
            approach argmax decoding.

    Raises:
        ValueError: temperature <= 0, NaN or infinite.
    """
    _check_temperature(temperature)
    return logits / temperature


def cfg_logits(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: uncond + scale * (cond - uncond).

    scale = 1 gives `cond`, scale = 0 gives `uncond`, scale > 1 pushes past the conditional
    prediction, away from the unconditional one (stronger adherence to the condition).

    Args:
        cond: logits with the condition, any shape.
        uncond: logits with the condition dropped, the same shape as `cond`.
        scale: a finite float (`guidance_scale`).
    """
    if not (isinstance(scale, (int, float)) and math.isfinite(scale)):
        raise ValueError(f"guidance_scale must be a finite number, got {scale!r}")
    if cond.shape != uncond.shape:
        raise ValueError(f"cond and uncond shapes differ: {tuple(cond.shape)} vs {tuple(uncond.shape)}")
    return uncond + scale * (cond - uncond)


# --------------------------------------------------------------------------- random draws
def _rand(shape: torch.Size | tuple, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Uniform [0, 1) float32 noise of `shape` on `device`, drawn with `generator`.

    Drawn on the generator's own device (so a CPU generator gives the same numbers for a CPU or
    a GPU model) and moved to `device`; with no generator, drawn from `device`'s global RNG.
    """
    draw_device = generator.device if generator is not None else device
    u = torch.rand(shape, generator=generator, device=draw_device, dtype=torch.float32)
    return u.to(device)


def gumbel_noise(
    shape: torch.Size | tuple, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Standard Gumbel(0, 1) noise, -log(-log(U)), float32, of `shape` on `device`."""
    u = _rand(shape, generator, torch.device(device))
    tiny = torch.finfo(u.dtype).tiny
    return -torch.log(-torch.log(u.clamp(min=tiny, max=1.0 - 1e-7)))


def class_planes(x: torch.Tensor) -> torch.Tensor:
    """(..., V) -> (V, ...) contiguous: one plane per class. With a few classes per position
    (the note level's 3 states at every step and pitch), per-class work on planes is many times
    faster on a CPU than along a last dim of 3; `.movedim(0, -1)` gives back a (..., V) view
    whose class slices `[..., k]` stay contiguous."""
    return x.movedim(-1, 0).contiguous()


def softmax_classes(logits: torch.Tensor) -> torch.Tensor:
    """softmax over the last dim, computed on `class_planes`: (..., V) -> a (..., V) view whose
    class slices are contiguous (~15x faster than `softmax(-1)` for 3 classes on a CPU)."""
    return class_planes(logits).softmax(0).movedim(0, -1)


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filtering over the last dim: keep the most probable classes whose probabilities
    add up to `top_p` (always at least the most probable one), set the others to -inf.
    `top_p` = 1 keeps everything. (..., V) -> (..., V). Ties rank the lower class first.

    With at most 8 classes (note states) the rank of each class comes from pairwise comparisons
    on contiguous class planes instead of a sort along a tiny last dim (much faster on a CPU);
    the result is then a view with contiguous class slices, as `softmax_classes` gives."""
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must lie in (0, 1], got {top_p}")
    if top_p >= 1.0:
        return logits
    V = logits.shape[-1]
    if V <= 8:
        planes = class_planes(logits)  # (V, ...)
        probs = planes.softmax(0)
        kept = []
        for c in range(V):  # mass of the classes ranked before c: more probable, or as probable and lower
            before = torch.zeros_like(probs[c])
            for j in range(V):
                if j != c:
                    ahead = probs[j] >= probs[c] if j < c else probs[j] > probs[c]
                    before = before + probs[j] * ahead
            kept.append(planes[c].masked_fill(before >= top_p, float("-inf")))
        return torch.stack(kept, 0).movedim(0, -1)
    ordered, order = logits.sort(dim=-1, descending=True, stable=True)  # (..., V)
    probs = ordered.softmax(dim=-1)
    drop = probs.cumsum(dim=-1) - probs >= top_p  # mass before this class already reaches top_p
    ordered = ordered.masked_fill(drop, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, order, ordered)


def fit_class_count(
    logits: torch.Tensor,
    class_index: int,
    group: torch.Tensor,
    target: torch.Tensor,
    active: torch.Tensor,
    iterations: int = 20,
    bound: float = 30.0,
) -> torch.Tensor:
    """The offset to add to one class's logit, shared by every position of a group, so that the
    expected number of positions sampling that class equals the group's target.

    Used to make the note level follow Level 0's plan: one offset per bar on the onset logits,
    so that the bar's expected onset count is the count its density asks for; the model still
    decides where the onsets go and which pitches. Found by bisection (the expectation grows
    monotonically with the offset) within [-bound, bound].

    Args:
        logits: (N, L, K, V) logits (already divided by the temperature) of K labels at each of
            L positions, e.g. (N, T, P, 3) note states.
        class_index: the class whose count is fitted (e.g. 1 = onset).
        group: (L,) int64 group of each position (e.g. its bar), 0 .. G-1.
        target: (N, G) the expected count wanted per group (clamped at 0).
        active: (N, L, K) bool: the labels being sampled; the others do not count.
    Returns:
        (N, G) offsets.
    """
    V = logits.shape[-1]
    planes = class_planes(logits)  # (V, N, L, K)
    others = torch.stack([planes[v] for v in range(V) if v != class_index])
    margin = planes[class_index] - torch.logsumexp(others, dim=0)  # (N, L, K): p = sigmoid(margin + offset)
    # only positions with an active label take part: gather them once (iterative decoding
    # samples fewer positions at each iteration), then every bisection step is dense
    rows = active.any(dim=2).any(dim=0).nonzero(as_tuple=True)[0]  # (L',) positions active in some sample
    margin, act, group = margin[:, rows], active[:, rows].to(margin.dtype), group[rows]  # (N, L', K)
    expected = lambda mid: (torch.sigmoid(margin + mid[:, group, None]) * act).sum(-1)  # (N, L') per position
    return _bisect_group_offsets(expected, group, target, bound, iterations)


def _bisect_group_offsets(expected, group: torch.Tensor, target: torch.Tensor, bound: float,
                          iterations: int) -> torch.Tensor:
    """(N, G) offsets within [-bound, bound] at which the sum over each group of
    `expected(offsets)` ((N, L') per position, growing with the offset) meets `target` (N, G,
    clamped at 0), by bisection: the bracket halves each time, 2 * bound / 2**iterations at the end."""
    N, G = target.shape
    lo = torch.full((N, G), -bound, device=target.device)
    hi = torch.full((N, G), bound, device=target.device)
    target = target.clamp(min=0).to(lo.dtype)
    for _ in range(iterations):
        mid = (lo + hi) / 2  # (N, G)
        total = torch.zeros(N, G, device=target.device).index_add_(1, group, expected(mid))  # (N, G)
        low = total < target
        lo = torch.where(low, mid, lo)
        hi = torch.where(low, hi, mid)
    return (lo + hi) / 2


def top_p_within(logits: torch.Tensor, first: int, top_p: float) -> torch.Tensor:
    """Nucleus filtering of the classes `first`.. only, which keep their total probability: the
    classes before `first` and the group as a whole are as likely as before, and inside the
    group the tail beyond `top_p` is cut and its mass goes to the classes kept. For the melody
    level, whose vocabulary is rest, hold and one onset per pitch: a note's start is spread over
    many pitches, and a nucleus over the whole vocabulary cut it in favour of holds. (..., V)
    logits (after the temperature) -> (..., V)."""
    group = logits[..., first:]
    kept = top_p_filter(group, top_p)
    kept = kept + (torch.logsumexp(group, -1, keepdim=True) - torch.logsumexp(kept, -1, keepdim=True))
    return torch.cat([logits[..., :first], kept], -1)


def temper_within(logits: torch.Tensor, first: int, temperature: float, top_p: float) -> torch.Tensor:
    """Logits whose classes before `first`, and the group `first`.. as a whole, keep the
    model's own odds (no temperature), while inside the group the temperature and the nucleus
    (`top_p_within`) apply: two decisions in one draw. The melody level's event (rest, hold, a
    note start) at the model's odds, the pitch of a start at its temperature. (..., V) -> (..., V)."""
    logits = logits.float()
    total = torch.logsumexp(logits[..., first:], -1, keepdim=True)
    inside = torch.log_softmax(apply_temperature(logits[..., first:], temperature), -1)
    return top_p_within(torch.cat([logits[..., :first], total + inside], -1), first, top_p)


PATTERN_SLOTS = 16  # the bar patterns of the rhythm prior: one slot per step of a 16-step (4/4) bar


def fit_bar_patterns(patterns, clusters: int = 16, seed: int = 0, iterations: int = 40) -> dict:
    """A mixture of independent per-slot onsets fitted to bars' onset patterns (`patterns`
    (n, 16) 0/1: a bar's 16 steps, 1 where a note starts; `metrics.bar_onset_patterns`) by k-means (Lloyd, `iterations`
    rounds, the first centres drawn with `seed`): the rhythm prior of `generate`
    (`rhythm_prior`). Returns {"weights": (K,) share of bars per cluster, "centres": (K, 16)
    onset chance per slot in the cluster, clipped to 0.01-0.99, "marginals": (16,) the onset
    chance per slot over all bars}, as lists (JSON for the generation config). Drawing a
    cluster, then each slot on its own, gives the songs' bars: with 16 clusters, two offbeat
    sixteenths of a bar are correlated 0.43 as in the POP909 training songs, where drawing every
    slot on its own gives 0."""
    x = torch.as_tensor(patterns, dtype=torch.float64)
    if x.dim() != 2 or x.shape[1] != PATTERN_SLOTS or len(x) < clusters or clusters < 1:
        raise ValueError(f"fit_bar_patterns: patterns must be (n >= {clusters}, {PATTERN_SLOTS}), got {tuple(x.shape)}")
    g = torch.Generator().manual_seed(seed)
    centres = x[torch.randperm(len(x), generator=g)[:clusters]].clone()
    for _ in range(iterations):
        nearest = torch.cdist(x, centres).argmin(1)
        for k in range(clusters):
            members = x[nearest == k]
            if len(members):
                centres[k] = members.mean(0)
    nearest = torch.cdist(x, centres).argmin(1)
    weights = torch.bincount(nearest, minlength=clusters).double() / len(x)
    return {"weights": [round(float(v), 6) for v in weights],
            "centres": [[round(float(v), 6) for v in row] for row in centres.clamp(0.01, 0.99)],
            "marginals": [round(float(v), 6) for v in x.mean(0).clamp(0.01, 0.99)]}


def bar_pattern_tensors(prior: dict, device=None) -> tuple:
    """A rhythm prior as `fit_bar_patterns` gives it (lists, from the generation config) ->
    tensors (weights (K,), centres (K, 16), marginals (16,)), checked: what
    `bar_pattern_offsets` takes (converted once per `generate`, not at every iteration)."""
    try:
        tensors = tuple(torch.tensor(prior[k], dtype=torch.float32, device=device)
                        for k in ("weights", "centres", "marginals"))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"rhythm_patterns in the generation config: not a prior of fit_bar_patterns ({e})") from None
    weights, centres, marginals = tensors
    K = len(weights)
    if weights.dim() != 1 or centres.shape != (K, PATTERN_SLOTS) or marginals.shape != (PATTERN_SLOTS,):
        raise ValueError(f"rhythm_patterns in the generation config: weights (K,), centres (K, {PATTERN_SLOTS}) and "
                         f"marginals ({PATTERN_SLOTS},) expected, got {tuple(weights.shape)}, {tuple(centres.shape)}, "
                         f"{tuple(marginals.shape)}")
    return tensors


def bar_pattern_offsets(logits, bar_index, position, in_prior, prior: tuple, strength: float,
                        cluster=None, generator=None):
    """The rhythm prior (`fit_bar_patterns`) over the rhythm level's count logits (N, T, V):
    each bar draws one cluster of the prior, from the clusters' weights times how well each
    agrees with the model's own onset chances there; then each step's "no onset" and "onset"
    logits move by `strength` x log(centre / marginal) of its slot, so the model's chances keep
    their context and the bar's slots go together as in the songs (a run of sixteenths, or
    none). `prior`: `bar_pattern_tensors`' (weights, centres, marginals). Only bars `in_prior`
    (T,) bool (16-step bars) take it. `cluster` (N, B): the bars' clusters drawn already (by
    the level's first iteration), else drawn here. Returns the offsets (N, T, V) and the
    clusters (N, B)."""
    weights, centres, marginals = prior
    N, T, V = logits.shape
    slot = position.clamp(max=PATTERN_SLOTS - 1)  # (T,)
    if cluster is None:
        B = int(bar_index.max()) + 1 if T else 0
        onset = 1 - logits.float().softmax(-1)[..., 0]  # (N, T) the model's chance of an onset
        m = marginals[slot]  # (T,)
        score = weights.clamp_min(1e-12).log()[None, :, None].repeat(N, 1, B)  # (N, K, B)
        for k in range(len(weights)):  # one cluster at a time: (N, T) at most in memory
            c = centres[k, slot]
            agree = ((1 - c) * (1 - onset) / (1 - m) + c * onset / m).clamp_min(1e-12).log()
            score[:, k].index_add_(1, bar_index, strength * agree * in_prior.float())
        cluster = (score + gumbel_noise(score.shape, generator, score.device)).argmax(1)  # (N, B)
    c = centres[cluster[:, bar_index], slot[None, :].expand(N, T)]  # (N, T)
    m = marginals[slot][None, :]
    off0 = strength * ((1 - c) / (1 - m)).log() * in_prior.float()
    off1 = strength * (c / m).log() * in_prior.float()
    values = torch.arange(V, device=logits.device)
    return torch.where(values == 0, off0[..., None], off1[..., None]), cluster


def fit_count_tilt(
    logits: torch.Tensor,
    values: torch.Tensor,
    group: torch.Tensor,
    target: torch.Tensor,
    active: torch.Tensor,
    iterations: int = 20,
    bound: float = 10.0,
) -> torch.Tensor:
    """The tilt to add, times each class's value, to the logits of every position of a group,
    so that the expected sum of the sampled values over the group's active positions equals
    the group's target: `fit_class_count` for a vocabulary of counts. The rhythm level's
    tokens are onset counts per step, and one tilt per bar makes their expected sum the bar's
    onsets as its density asks (exponential tilting: the model's preferences between counts
    of one step keep their order). Found by bisection within [-bound, bound].

    Args:
        logits: (N, L, V) logits (already divided by the temperature); -inf never sampled.
        values: (V,) the value of each class (e.g. 0, 1, 2, ... onsets).
        group: (L,) int64 group of each position, 0 .. G-1.
        target: (N, G) the expected sum wanted per group (clamped at 0).
        active: (N, L) bool: the positions being sampled; the others do not count.
    Returns:
        (N, G) tilts.
    """
    values = values.to(logits.device, torch.float32)
    rows = active.any(dim=0).nonzero(as_tuple=True)[0]  # positions active in some sample
    x, act, group = logits[:, rows].float(), active[:, rows].float(), group[rows]
    expected = lambda mid: (torch.softmax(x + mid[:, group, None] * values, dim=-1) * values).sum(-1) * act
    return _bisect_group_offsets(expected, group, target, bound, iterations)


def choose_exactly(scores: torch.Tensor, count: torch.Tensor, active: torch.Tensor,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """(..., K) bool: for each row of K candidates, exactly `count` (...) of the active ones
    (all of them where fewer are active), drawn without replacement with chances in
    proportion to exp(scores): the Gumbel-top-k trick (the k largest of scores + Gumbel noise
    are a sample of k without replacement). How the note level starts exactly the number of
    notes at a step that the rhythm level asked for, choosing their pitches by its own logits."""
    noisy = scores.float() + gumbel_noise(scores.shape, generator, scores.device)
    noisy = noisy.masked_fill(~active, float("-inf"))
    k = int(count.max()) if count.numel() else 0
    chosen = torch.zeros_like(active)
    if k <= 0:
        return chosen
    top = noisy.topk(min(k, noisy.shape[-1]), dim=-1).indices  # (..., k) best first
    take = torch.arange(top.shape[-1], device=top.device) < count.unsqueeze(-1)  # (..., k)
    return chosen.scatter(-1, top, take) & active


def sample_note_states(
    probs: torch.Tensor,
    active: torch.Tensor,
    known: torch.Tensor,
    generator: torch.Generator | None = None,
    continuation_probs: torch.Tensor | None = None,
    chain_confidence: bool = True,
    known_prev_ratio: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample note states (0 silent, 1 onset, 2 held) for the active cells of a roll, so that
    a "held" cell always continues a note.

    One network pass gives each cell's marginal p(silent), p(onset), p(held). Sampling every
    cell on its own would scatter "held" cells after silence; instead each pitch is read as a
    chain along time: a cell starts a note with p(onset); it continues the note sounding
    before it with the continuation probability c_t = p_t(held) / p_{t-1}(sounding) (the
    first-order factorisation of the marginals); else it is silent. When the cell before is
    already known and sounding, p_{t-1}(sounding) is still the model's prediction there
    (`known_prev_ratio`): the model does not read a known neighbour's state precisely (on the
    POP909 model, p(held) after a known sounding cell averaged 0.24 where 0.70 was true, while
    the ratio averaged 0.68 against a true 0.71), and taking c_t = p_t(held) there cut notes
    short at every later iteration. A known silent cell before: no continuation. The chains are resolved with running
    maxima, without a loop over time. A sampled cell right before a known held cell always
    sounds: a short gap back to the pitch's last sounding cell is bridged with holds (at most
    `MAX_BRIDGE` cells), else the note starts there; so iterative decoding, which fixes some steps
    before their neighbours, does not cut notes short.

    Args:
        probs: (N, T, P, 3) state probabilities (after temperature, guidance, filtering).
        active: (N, T, P) bool: cells to sample; the others keep `known`.
        known: (N, T, P) int64 states of the cells that are not sampled.
        generator: seeds the draw.
        continuation_probs: (N, T, P, 3) the probabilities the continuation is computed from,
            when they differ from `probs` (e.g. `probs` has its onsets pushed towards a planned
            count; how long notes last should not change with that). Default: `probs`.
        chain_confidence: the returned probability of each sampled state is its probability
            under the chain that drew it (an onset p(onset), a hold its continuation, a silence
            after a sounding cell 1 - p(onset) - continuation); False: the marginal under
            `probs`. Confidence-ordered decoding keeps the most probable steps; with marginals,
            steps holding notes looked improbable and were re-drawn more often than steps where
            notes had ended, which shortened notes.
        known_prev_ratio: see above (False: c_t = p_t(held) after a known sounding cell).
    Returns:
        states (N, T, P) int64, and the probability of each sampled state (see chain_confidence).
    """
    N, T, P, _ = probs.shape
    p_on = probs[..., 1]
    c_probs = probs if continuation_probs is None else continuation_probs
    p_held = c_probs[..., 2]
    sounding_prev = torch.zeros_like(p_on)  # (N, T, P) p(the cell before sounds)
    predicted = c_probs[:, :-1, :, 1] + p_held[:, :-1]
    if known_prev_ratio:  # a known sounding cell: the model's own p(sounding) there (see above)
        known_prev = torch.where(known[:, :-1] > 0, predicted, torch.zeros_like(predicted))
    else:
        known_prev = (known[:, :-1] > 0).to(p_on.dtype)
    sounding_prev[:, 1:] = torch.where(active[:, :-1], predicted, known_prev)
    cont = torch.where(sounding_prev > 0, p_held / sounding_prev.clamp_min(1e-6), torch.zeros_like(p_held))
    cont = torch.minimum(cont.clamp(0, 1), 1 - p_on)  # (N, T, P)
    u = _rand((N, T, P), generator, probs.device)
    onset = active & (u < p_on)
    may_hold = active & ~onset & (u < p_on + cont)
    # a cell that may hold sounds only if a note start (or a known sounding cell) comes before it
    # with only sounding cells between: compare the last start with the last silence
    steps = torch.arange(T, device=probs.device)[None, :, None]
    start = onset | (~active & (known > 0))
    silence = (active & ~onset & ~may_hold) | (~active & (known == 0))
    last_start = torch.where(start, steps, -1).cummax(dim=1).values
    last_silence = torch.where(silence, steps, -1).cummax(dim=1).values
    held = may_hold & (last_start > last_silence)
    states = torch.where(active, torch.where(onset, 1, torch.where(held, 2, 0)), known)
    # A known held cell needs its predecessor sounding. Where a sampled silent cell comes right
    # before one, the note is bridged back to the last sounding cell of the pitch when that is
    # at most `MAX_BRIDGE` sampled cells away (the hold continues that note); else the note
    # starts there (an onset).
    before_known_hold = torch.zeros_like(active)
    before_known_hold[:, :-1] = ~active[:, 1:] & (known[:, 1:] == 2)
    end = active & before_known_hold & (states == 0)  # (N, T, P) cells that must sound
    if end.any():
        last_sound = torch.where(states > 0, steps, -1).cummax(dim=1).values
        last_fixed_silence = torch.where(~active & (known == 0), steps, -1).cummax(dim=1).values
        next_end = torch.where(end, steps, T).flip(1).cummin(dim=1).values.flip(1)  # nearest end at or after
        at = next_end.clamp(max=T - 1)
        source = last_sound.gather(1, at)  # the note a bridge would continue
        bridgeable = (source >= 0) & (at - source <= MAX_BRIDGE) & (last_fixed_silence.gather(1, at) < source)
        fill = active & (states == 0) & (next_end < T) & (source < steps) & bridgeable
        states = torch.where(fill, 2, states)
        states = torch.where(end & ~bridgeable, 1, states)
    if chain_confidence:
        # the probability of each sampled state under the chain that drew it: an onset p(onset),
        # a hold its continuation, a silence after a sounding cell the note ending there
        prev = torch.zeros_like(active)
        prev[:, 1:] = states[:, :-1] > 0
        chosen = torch.where(
            states == 1, p_on, torch.where(states == 2, cont, (1 - p_on - cont * prev).clamp_min(0))
        )
    else:
        chosen = torch.where(states == 0, probs[..., 0], torch.where(states == 1, p_on, probs[..., 2]))  # (N, T, P)
    return states, chosen


def sample_categorical(
    logits: torch.Tensor, temperature: float = 1.0, generator: torch.Generator | None = None, top_p: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample one class per position from softmax(logits / temperature) over the last dim.

    Uses the Gumbel-max trick: argmax(logits / T + Gumbel noise) is an exact sample from
    softmax(logits / T), and only uniform noise is drawn, with `generator`. As T -> 0 the sample
    becomes argmax(logits) (T must stay > 0; a tiny T such as 1e-4 is effectively greedy).
    Logits of -inf are never sampled.

    Args:
        logits: (..., V) float tensor, e.g. (B, L, V).
        temperature: > 0 (see `apply_temperature`).
        generator: seeds the draw.
        top_p: nucleus sampling after the temperature (`top_p_filter`); 1 = off.

    Returns:
        samples: (...) int64 class indices, e.g. (B, L).
        probs: (...) float32 probability of each sampled class under the tempered distribution
            softmax(logits / T) that it was drawn from (MaskGIT's confidence).
    """
    scaled = top_p_filter(apply_temperature(logits.float(), temperature), top_p)  # (..., V)
    noise = gumbel_noise(scaled.shape, generator, scaled.device)  # (..., V)
    samples = (scaled + noise).argmax(dim=-1)  # (...)
    probs = torch.softmax(scaled, dim=-1).gather(-1, samples.unsqueeze(-1)).squeeze(-1)  # (...)
    return samples, probs


def sample_bernoulli(
    logits: torch.Tensor, temperature: float = 1.0, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample independent on/off labels, p = sigmoid(logits / temperature), elementwise.

    For multi-label outputs (e.g. note on/off for each of K pitches at a step). Higher
    temperature moves every p towards 0.5 (more varied); T -> 0 approaches thresholding at
    logit 0 (p > 0.5).

    Args:
        logits: any shape, e.g. (B, L, K).
        temperature: > 0 (see `apply_temperature`).
        generator: seeds the draw.

    Returns:
        samples: bool tensor of the same shape, True = on.
        confidence: float32, the probability of the sampled outcome: p where on, 1 - p where
            off. To rank whole positions (B, L) the model code reduces it over K, e.g. the sum
            of logs (joint probability of the position's labels).
    """
    p = torch.sigmoid(apply_temperature(logits.float(), temperature))  # (..., K)
    u = _rand(p.shape, generator, p.device)  # (..., K)
    samples = u < p
    confidence = torch.where(samples, p, 1 - p)
    return samples, confidence


# --------------------------------------------------------------------------- masking
def _rank_ascending(scores: torch.Tensor) -> torch.Tensor:
    """Rank of each entry within its row, 0 = smallest (ties broken by position): (B, L)."""
    order = torch.argsort(scores, dim=-1, stable=True)  # (B, L)
    ranks = torch.empty_like(order)
    positions = torch.arange(scores.shape[-1], device=scores.device).expand_as(order)  # (B, L)
    return ranks.scatter_(-1, order, positions)


def _per_row_counts(num: int | torch.Tensor, batch: int, device: torch.device, name: str) -> torch.Tensor:
    """An int or a (B,) / (B, 1) tensor as a (B,) int64 tensor on device."""
    if isinstance(num, torch.Tensor):
        if num.dtype.is_floating_point or num.dtype == torch.bool:
            raise ValueError(f"{name} must be integer, got dtype {num.dtype}")
        num = num.to(device=device, dtype=torch.int64).reshape(-1)
        if num.numel() == 1:
            num = num.expand(batch)
        if num.numel() != batch:
            raise ValueError(f"{name} must hold one count per batch row ({batch}), got {num.numel()}")
        return num
    if not isinstance(num, int):
        raise ValueError(f"{name} must be an int or an integer tensor, got {num!r}")
    return torch.full((batch,), num, dtype=torch.int64, device=device)


def choose_tokens_to_keep_masked(
    confidence: torch.Tensor,
    still_masked: torch.Tensor,
    num_to_mask: int | torch.Tensor,
    generator: torch.Generator | None = None,
    mode: str = "confidence",
) -> torch.Tensor:
    """One MaskGIT / MAR step: which of this iteration's masked positions stay masked.

    Among the positions that were masked during this iteration (`still_masked`, all of which
    have just been predicted), the `num_to_mask[b]` of row b with the lowest score stay masked
    for the next iteration; the others keep their sampled values. Positions already known are
    never re-masked.

    Scores:
      mode="confidence": log(confidence): exactly the least confident stay masked (MaskGIT).
      mode="random": uniform noise, i.e. a random order as in MAR (confidence is ignored).
    Ties are broken by position (lower index stays masked first).

    Args:
        confidence: (B, L) probability of each position's sampled value, in [0, 1].
        still_masked: (B, L) bool, True where the position was masked this iteration.
        num_to_mask: int, or (B,) integer tensor (e.g. a row of `masked_counts_batched`): how
            many stay masked in each row; 0 <= num_to_mask[b] <= still_masked[b].sum().
        generator: seeds the noise (used when mode="random").
        mode: one of KEEP_MASKED_MODES.

    Returns:
        (B, L) bool, True where the position stays masked; a subset of `still_masked` with
        exactly num_to_mask[b] True entries in row b.
    """
    if mode not in KEEP_MASKED_MODES:
        raise ValueError(f"unknown re-masking mode {mode!r}; allowed: {', '.join(KEEP_MASKED_MODES)}")
    if confidence.dim() != 2 or confidence.shape != still_masked.shape:
        raise ValueError(
            f"confidence and still_masked must both be (B, L), got {tuple(confidence.shape)} "
            f"and {tuple(still_masked.shape)}"
        )
    still_masked = still_masked.bool()
    B, L = confidence.shape
    k = _per_row_counts(num_to_mask, B, confidence.device, "num_to_mask")  # (B,)
    available = still_masked.sum(-1)  # (B,)
    if bool(((k < 0) | (k > available)).any()):
        raise ValueError(
            f"num_to_mask must lie in [0, masked positions] per row; got {k.tolist()} "
            f"with {available.tolist()} masked positions"
        )

    if mode == "random":
        scores = _rand((B, L), generator, confidence.device)  # (B, L)
    else:
        tiny = torch.finfo(torch.float32).tiny
        scores = torch.log(confidence.float().clamp_min(tiny))  # (B, L)
    # A NaN confidence counts as least confident; known positions rank after every masked one,
    # so they are never chosen.
    scores = scores.masked_fill(scores.isnan(), float("-inf"))  # (B, L)
    scores = scores.masked_fill(~still_masked, float("inf"))  # (B, L)
    ranks = _rank_ascending(scores)  # (B, L)
    return (ranks < k[:, None]) & still_masked  # (B, L)


def refine_mask(
    known: torch.Tensor,
    ratio: float,
    generator: torch.Generator | None = None,
    editable: torch.Tensor | None = None,
) -> torch.Tensor:
    """Positions to re-mask for one refinement ("deep sampling") round, chosen at random.

    In each row b, exactly round(ratio * n_b) positions are chosen uniformly at random among the
    n_b candidates, the positions that are both known (decoded) and editable. Rounding is half
    up: floor(ratio * n_b + 0.5), so ratio 0.3 of 5 positions is 2 (1.5 -> 2) and of 10 is 3.
    Positions that are not editable (notes outside an inpainting region, structure given by the
    user) and positions not yet known are never chosen. The caller masks the result again,
    e.g. `masked = ~known | refine_mask(known, ratio, generator, editable)`.

    Args:
        known: (B, L) bool, True where the position holds a decoded value.
        ratio: the fraction to re-mask, in [0, 1] (the config's refinement ratio, default 0.3).
        generator: seeds the choice.
        editable: (B, L) bool or None (= every position editable).

    Returns:
        (B, L) bool, True where the position is to be re-masked.
    """
    if not (isinstance(ratio, (int, float)) and 0.0 <= ratio <= 1.0):  # also rejects NaN
        raise ValueError(f"refinement ratio must lie in [0, 1], got {ratio!r}")
    if known.dim() != 2:
        raise ValueError(f"known must be (B, L), got shape {tuple(known.shape)}")
    candidates = known.bool()  # (B, L)
    if editable is not None:
        if editable.shape != known.shape:
            raise ValueError(
                f"editable must have known's shape {tuple(known.shape)}, got {tuple(editable.shape)}"
            )
        candidates = candidates & editable.bool().to(known.device)
    B, L = candidates.shape
    n = candidates.sum(-1).to(torch.float64)  # (B,)
    k = torch.floor(n * ratio + 0.5).to(torch.int64)  # (B,) round half up
    scores = _rand((B, L), generator, known.device).masked_fill(~candidates, float("inf"))  # (B, L)
    return (_rank_ascending(scores) < k[:, None]) & candidates  # (B, L)
