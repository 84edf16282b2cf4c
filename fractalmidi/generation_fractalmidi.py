"""The hierarchical unfolding: `FractalMIDIModel.generate`.

This file travels with Hub checkpoints for `trust_remote_code`: at import time it needs only
torch and its sibling files; turning a result into a `Piece` or a MIDI file imports the
`fractalmidi` package then.

Level by level, top down, each level decoded in parallel by iterative masked prediction
(MaskGIT): start with the unknown tokens masked; at every iteration predict all of them,
sample them (temperature, classifier-free guidance), keep the most confident and re-mask
the rest for the next iteration, fewer each time (cosine schedule). After a content level,
`refine_rounds` times re-mask `refine_ratio` of what it generated and predict it again.
The number of network passes depends on the iterations, never on the length.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from . import limits_fractalmidi as limits
from .limits_fractalmidi import check_curve_value, check_number, check_time_signature
from .tokens_fractalmidi import class_to_density, class_to_tempo, class_to_velocity, density_to_class, tempo_to_class
from .sampling import (
    apply_temperature,
    cfg_logits,
    choose_tokens_to_keep_masked,
    class_planes,
    fit_class_count,
    masked_counts_batched,
    refine_mask,
    sample_bernoulli,
    sample_categorical,
    sample_note_states,
    softmax_classes,
    top_p_filter,
)

HELD = 2


@dataclass
class FractalMIDIGeneration:
    """What `generate` returns: the pieces as tensors, and how they were made.

    states (N, T, P): per step and pitch 0 silent / 1 onset / 2 held; velocity (N, T, P) on
    onsets; bar_tempo (N, B) BPM; requested_density (N, B) the density Level 0 asked for
    (onsets per step); time_signatures (B, 2); harmony (N, H, 12) or None;
    num_forward_passes: sequential network passes (a batched cond + uncond pass counts once);
    influence (N, T, P): |p_cond - p_uncond| of the note states at the last note iteration
    (where the condition changed the prediction), when guidance ran; intermediates: each
    level after each iteration, when asked for.
    """

    states: torch.Tensor
    velocity: torch.Tensor
    bar_tempo: torch.Tensor
    requested_density: torch.Tensor
    time_signatures: torch.Tensor
    steps_per_beat: int
    pitch_low: int
    pitch_high: int
    num_forward_passes: int
    harmony: torch.Tensor | None = None
    influence: torch.Tensor | None = None
    intermediates: list = field(default_factory=list)
    prompt: object = None  # the prompt Piece, when inpainting / continuing
    region: torch.Tensor | None = None  # (T,) bool: steps that were generated
    tempo_map: tuple | None = None  # exact (steps, bpm) of the prompt, kept when inpainting

    @property
    def num_samples(self) -> int:
        return self.states.shape[0]

    def to_piece(self, index: int = 0):
        """Sample `index` as a `fractalmidi.Piece`. Outside the generated region the prompt's
        notes are kept exactly; generated notes never overlap them."""
        import numpy as np
        from fractalmidi.piece import Piece, normalize_notes, roll_to_notes

        states = self.states[index].cpu().numpy()
        roll = np.stack([states == 1, states > 0, self.velocity[index].cpu().numpy()]).astype(np.uint8)  # (3, T, P)
        sigs = self.time_signatures.cpu().numpy()
        lengths = sigs[:, 0] * 4 * self.steps_per_beat // sigs[:, 1]
        bar_starts = np.concatenate([[0], np.cumsum(lengths)])
        if self.tempo_map is not None:  # inpainting keeps the prompt's exact tempo map
            tempo_steps, tempo_bpm = self.tempo_map
        else:  # a tempo event at every bar
            tempo_steps, tempo_bpm = bar_starts[:-1], self.bar_tempo[index].cpu().numpy().astype(np.float64)
        base = Piece(np.zeros((0, 4)), bar_starts, sigs, tempo_steps, tempo_bpm,
                     self.steps_per_beat, (self.pitch_low, self.pitch_high))
        if self.prompt is None or self.region is None:
            return base.replace_notes(roll_to_notes(roll, self.pitch_low))
        region = self.region.cpu().numpy()
        kept = _kept_notes(self.prompt.notes, region)
        # generated notes: only from the region's cells that no kept note occupies
        free = roll.copy()
        free[:, ~region] = 0
        free[:, base.replace_notes(kept).to_roll()[1] > 0] = 0
        new = roll_to_notes(free, self.pitch_low)
        # a generated note ends where the next kept note of its pitch starts
        for i, (p, s, e, _) in enumerate(new):
            later = kept[(kept[:, 0] == p) & (kept[:, 1] >= s) & (kept[:, 1] < e), 1]
            if len(later):
                new[i, 2] = later.min()
        notes, _ = normalize_notes(np.concatenate([kept, new[new[:, 2] > new[:, 1]]]))
        return base.replace_notes(notes)

    def to_pieces(self) -> list:
        return [self.to_piece(i) for i in range(self.num_samples)]

    def to_midi(self, path, index: int = 0):
        """Write sample `index` as a MIDI file (atomically); returns the path."""
        from fractalmidi.midi_io import write_midi

        return write_midi(self.to_piece(index), path)


def _kept_notes(notes, region):
    """Prompt notes that start outside the generated region (T,) bool (steps past the prompt
    count as region)."""
    import numpy as np

    notes = np.asarray(notes).reshape(-1, 4)
    start = notes[:, 1]
    inside = np.zeros(len(notes), bool)
    ok = start < len(region)
    inside[ok] = region[start[ok]]
    return notes[~inside].copy()


def _condition_runs(level, parent, drop):
    """`level.condition(parent, drop)` (the adaLN parameters of every block), computed once per
    run of equal parent rows and spread over the run: a bar's structure state conditions all
    its harmony patches, a patch's state all its steps, so this does 1/4 to 1/16 of the work."""
    N, L = parent.shape[:2]
    if L < 2:
        return level.condition(parent, drop)
    new = torch.ones(L, dtype=torch.bool, device=parent.device)
    new[1:] = (parent[:, 1:] != parent[:, :-1]).any(-1).any(0)  # a row that differs from the one before
    run = new.cumsum(0) - 1  # (L,) the run of each row
    mods = level.condition(parent[:, new], drop)  # (N, runs, ...) each
    return [m.index_select(1, run) for m in mods]


def drop_orphan_holds(states: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
    """A "held" cell continues a note: it needs an onset before it with only held cells
    between. Held cells that follow silence (or start the piece) are made silent, so every
    note in the result begins with an onset and the onsets are the notes (fixed cells stay).
    states (N, T, P) -> (N, T, P)."""
    T = states.shape[1]
    steps = torch.arange(T, device=states.device)[None, :, None]
    last = torch.where(states != HELD, steps, -1).cummax(dim=1).values  # (N, T, P) last non-held step
    anchor = states.gather(1, last.clamp(min=0))  # the state there
    orphan = (states == HELD) & ((last < 0) | (anchor != 1)) & ~fixed
    return states.masked_fill(orphan, 0)


class FractalMIDIGenerationMixin:
    """`generate` for `FractalMIDIModel` (kept apart from the network, as diffusers keeps its
    pipelines apart from its models)."""

    @torch.inference_mode()
    def generate(
        self,
        num_bars: int | None = None,
        time_signature: tuple[int, int] | None = None,
        time_signatures=None,
        temperature: float | None = None,
        cfg: float = 1.0,
        top_p: float | None = None,
        follow_structure: bool = True,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        num_iterations=None,
        refine_ratio: float | None = None,
        refine_rounds: int | None = None,
        structure: dict | None = None,
        prompt=None,
        inpaint_bars=None,
        num_samples: int = 1,
        return_intermediates: bool = False,
        return_influence: bool = False,
        progress=None,
    ) -> FractalMIDIGeneration:
        """Generate piano music, structure first, then harmony, then notes.

        Args:
            num_bars: bars to generate (with a prompt: the total, prompt bars included).
            time_signature: (numerator, denominator) of the generated bars (default 4/4, or the
                prompt's last bar when continuing), or `time_signatures`, one per bar.
            temperature: > 0; scales every level's logits (higher = more varied); default
                `config.default_temperature` (0.8).
            top_p: nucleus sampling of the structure classes, note states and velocities
                (1 = off; default `config.default_top_p`, 0.9): per token only the most probable
                choices that cover `top_p` of the probability, which keeps rare spurious onsets out.
            follow_structure: the note level follows Level 0's density as a plan: at every
                iteration each bar's onset logits get one shared offset so that the bar's
                expected onset count is what its density asks for (the model still chooses
                where and which pitches). False: notes are sampled from the model alone and
                follow the structure only through their conditioning (and `cfg`).
            cfg: classifier-free guidance scale of the content levels: logits = uncond +
                cfg * (cond - uncond); 1 = no guidance (one pass per iteration), higher = the
                notes follow the structure more closely (a batched cond + uncond pass).
            seed / generator: the same seed gives the same piece.
            num_iterations: decoding iterations per level (default `config.num_iterations`).
            refine_ratio, refine_rounds: the refinement ("deep sampling") after each content level.
            structure: {"density": per-bar onsets per step, "tempo": per-bar BPM}, either or
                both, one value per bar (None entries are generated): kept, not regenerated.
            prompt: a `fractalmidi.Piece` to inpaint or continue.
            inpaint_bars: bar ranges to regenerate, 0-based half-open [(first, stop), ...];
                default with a prompt: the bars after it (continuation).
            num_samples: pieces generated at once (a batch).
            return_intermediates: keep each level after each iteration (for a visualiser).
            return_influence: run the unconditional pass at the last note iteration even when
                cfg == 1, to report where the condition changes the prediction.
            progress: None, True (a tqdm bar) or a callable taking (level, iteration, total).
        Returns:
            a `FractalMIDIGeneration` (`.to_piece()`, `.to_midi(path)`, `.num_forward_passes`).
        """
        cfg_ = self.config
        device = self.device
        if temperature is None:
            temperature = cfg_.default_temperature
        if top_p is None:
            top_p = getattr(cfg_, "default_top_p", 1.0)  # configs saved before it existed: off
        # the ranges every front-end uses too (limits_fractalmidi): checked before any work
        temperature = check_number("temperature", temperature, limits.TEMPERATURE)
        cfg = check_number("cfg (guidance scale)", cfg, limits.GUIDANCE_SCALE)
        top_p = check_number("top_p", top_p, limits.TOP_P, low_open=True)
        self._top_p = float(top_p)
        if generator is None:
            generator = torch.Generator(device="cpu")
            seed = int(torch.randint(0, 2**31 - 1, ()).item()) if seed is None else check_number(
                "seed", seed, limits.SEED, integer=True)
            generator.manual_seed(seed)
        iters = list(num_iterations) if num_iterations is not None else list(cfg_.num_iterations)
        if len(iters) != len(cfg_.levels):
            raise ValueError(f"num_iterations must give one count >= 1 per level {cfg_.levels}, got {iters}")
        iters = [check_number(f"num_iterations[{i}] ({name})", n, limits.ITERATIONS, integer=True)
                 for i, (n, name) in enumerate(zip(iters, cfg_.levels))]
        refine_ratio = cfg_.refine_ratio if refine_ratio is None else refine_ratio
        refine_rounds = cfg_.refine_rounds if refine_rounds is None else refine_rounds
        refine_ratio = check_number("refine_ratio", refine_ratio, limits.REFINE_RATIO)
        refine_rounds = check_number("refine_rounds", refine_rounds, limits.REFINE_ROUNDS, integer=True)
        N = check_number("num_samples", num_samples, limits.NUM_SAMPLES, integer=True)

        plan = self._plan_bars(num_bars, time_signature, time_signatures, prompt, inpaint_bars)
        sigs, lengths, bar_starts, gen_bars = plan  # (B, 2), (B,), (B + 1,), (B,) bool
        B, T = len(lengths), int(bar_starts[-1])
        if B > cfg_.max_bars:
            raise ValueError(f"{B} bars is more than this model's max_bars = {cfg_.max_bars}")
        if int(lengths.max()) > cfg_.max_bar_len:
            raise ValueError(f"a bar of {int(lengths.max())} steps is longer than max_bar_len = {cfg_.max_bar_len}")
        steps = torch.arange(T, device=device)
        bar_index = torch.bucketize(steps, bar_starts[1:].to(device), right=True)  # (T,)
        bar_position = steps - bar_starts.to(device)[bar_index]
        region = gen_bars.to(device)[bar_index]  # (T,) steps to generate

        self._passes = 0
        self._intermediates = [] if return_intermediates else None
        total = iters[0] + 1 + sum(iters[1:]) + (len(iters) - 1) * refine_rounds + (1 if cfg_.use_harmony else 0)
        self._progress = _Progress(progress, total)

        # ---- prompt: what is kept, as tokens of every level
        P = cfg_.num_pitches
        known_states = torch.zeros(N, T, P, dtype=torch.long, device=device)
        known_velocity = torch.zeros(N, T, P, dtype=torch.long, device=device)
        fixed = torch.zeros(N, T, P, dtype=torch.bool, device=device)  # cells the notes must keep
        tempo_map = None
        prompt_tempo = prompt_density = None
        if prompt is not None:
            kept = torch.as_tensor(_kept_notes(prompt.notes, region.cpu().numpy()), dtype=torch.long, device=device)
            known_states, known_velocity, fixed = self._cells_of(kept, T, N, region)
            pb = prompt.num_bars
            prompt_tempo = torch.as_tensor(prompt.bar_tempo(), dtype=torch.float32, device=device)
            prompt_density = torch.as_tensor(prompt.bar_density(), dtype=torch.float32, device=device)
            if B == pb:  # inpainting: the prompt's tempo map stays exactly
                tempo_map = (prompt.tempo_steps.copy(), prompt.tempo_bpm.copy())

        # ---- Level 0: structure
        tempo_known, density_known = self._known_structure(structure, B, gen_bars, prompt_tempo, prompt_density, device)
        tempo_cls, density_cls = self._decode_structure(
            tempo_known, density_known, lengths.to(device), N, iters[0], temperature, generator
        )
        valid_bars = torch.ones(N, B, dtype=torch.bool, device=device)
        h0 = self._pass(self.structure_state, tempo_cls, density_cls, lengths.to(device).expand(N, B), valid_bars)
        self._progress("structure", 1)

        # ---- Level 1: harmony
        h1, pcs, level = None, None, 1
        step_mask = torch.ones(N, T, dtype=torch.bool, device=device)
        if cfg_.use_harmony:
            hp = cfg_.harmony_patch_steps
            known_pcs, _ = self.harmony_targets(known_states, step_mask)
            patch_region = region[::hp]  # a patch is generated if its first step is
            parent = self.harmony_parent(h0, bar_index.expand(N, T), step_mask)
            patch_position = bar_position[::hp].expand(N, -1)
            conditions = {}  # the harmony level's adaLN parameters, computed at its first pass
            pcs = self._decode_harmony(
                known_pcs, patch_region, patch_position, parent, iters[level], temperature, cfg,
                refine_ratio, refine_rounds, generator, conditions,
            )
            patch_valid = torch.ones_like(pcs[..., 0], dtype=torch.bool)
            none = torch.zeros_like(patch_valid)
            no_drop = torch.zeros(N, dtype=torch.bool, device=device)
            if "cond" not in conditions:  # the conditioned half of a guided batch, or computed now
                both = conditions.get("cond+uncond")
                conditions["cond"] = [m[:N] for m in both] if both else _condition_runs(self.harmony, parent, no_drop)
            h1, _ = self._pass(self.harmony, pcs, none, patch_position, parent, no_drop, patch_valid,
                               modulations=conditions["cond"])
            self._progress("harmony", 1)
            level += 1

        # ---- Level 2: notes
        parent = self.note_parent(h0, h1, bar_index.expand(N, T))
        density = self._bar_density(density_cls, structure, prompt_density, gen_bars)  # (N, B)
        plan = (bar_index, density * lengths.to(device)) if follow_structure else None  # onsets per bar
        states, velocity, influence = self._decode_notes(
            known_states, known_velocity, fixed, region, bar_position.expand(N, T), parent,
            iters[level], temperature, cfg, refine_ratio, refine_rounds, generator, return_influence, plan,
        )
        self._progress.close()

        tempo = self._bar_tempo(tempo_cls, structure, prompt_tempo, gen_bars)
        return FractalMIDIGeneration(
            states=states, velocity=velocity, bar_tempo=tempo,
            requested_density=density,
            time_signatures=sigs, steps_per_beat=cfg_.steps_per_beat,
            pitch_low=cfg_.pitch_low, pitch_high=cfg_.pitch_high,
            num_forward_passes=self._passes, harmony=pcs, influence=influence,
            intermediates=self._intermediates or [], prompt=prompt,
            region=region.cpu() if prompt is not None else None, tempo_map=tempo_map,
        )

    # ------------------------------------------------------------------ bars
    def _plan_bars(self, num_bars, time_signature, time_signatures, prompt, inpaint_bars):
        """Time signature and length of every bar, bar starts, and which bars to generate."""
        cfg = self.config
        if prompt is not None and prompt.steps_per_beat != cfg.steps_per_beat:
            raise ValueError(f"the prompt has {prompt.steps_per_beat} steps per beat, the model {cfg.steps_per_beat}")
        if time_signatures is not None:
            sigs = [tuple(int(v) for v in s) for s in time_signatures]
        else:
            pb = prompt.num_bars if prompt is not None else 0
            if num_bars is None:
                num_bars = pb
            if not isinstance(num_bars, int) or num_bars < 1:
                raise ValueError(f"num_bars must be a whole number >= 1, got {num_bars}")
            if num_bars < pb:
                raise ValueError(f"num_bars = {num_bars} is fewer than the prompt's {pb} bars")
            if num_bars > cfg.max_bars:
                raise ValueError(f"{num_bars} bars is more than this model's max_bars = {cfg.max_bars}")
            head = [tuple(int(v) for v in s) for s in prompt.time_signatures] if prompt is not None else []
            if time_signature is None:
                time_signature = head[-1] if head else (4, 4)
            tail_sig = tuple(int(v) for v in time_signature)
            sigs = head + [tail_sig] * (num_bars - pb)
        lengths = []
        for i, (n, d) in enumerate(sigs):
            try:
                check_time_signature(n, d, cfg.steps_per_beat)
            except ValueError as e:
                raise ValueError(f"bar {i + 1}: {e}") from None
            lengths.append(n * 4 * cfg.steps_per_beat // d)
        B = len(sigs)
        gen = torch.ones(B, dtype=torch.bool)
        if prompt is not None:
            gen[: prompt.num_bars] = False
            for first, stop in inpaint_bars or []:
                if not (0 <= first < stop <= B):
                    raise ValueError(f"inpaint bars {first + 1}-{stop} lie outside the piece's bars 1-{B}")
                gen[first:stop] = True
            if not gen.any():
                raise ValueError("nothing to generate: give inpaint_bars or more num_bars than the prompt has")
        elif inpaint_bars:
            raise ValueError("inpaint_bars needs a prompt")
        lengths = torch.tensor(lengths)
        starts = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
        return torch.tensor(sigs), lengths, starts, gen

    def _cells_of(self, notes, T, N, region):
        """Prompt notes as state / velocity cells (N, T, P), and the cells they fix: every cell
        outside the region, and inside it the cells where a kept note still sounds."""
        cfg = self.config
        P = cfg.num_pitches
        states = torch.zeros(T, P, dtype=torch.long, device=region.device)
        velocity = torch.zeros(T, P, dtype=torch.long, device=region.device)
        sounding = torch.zeros(T, P, dtype=torch.bool, device=region.device)
        for p, s, e, v in notes.tolist():
            if s >= T:
                continue
            e = min(e, T)
            states[s:e, p - cfg.pitch_low] = HELD
            states[s, p - cfg.pitch_low] = 1
            velocity[s, p - cfg.pitch_low] = v
            sounding[s:e, p - cfg.pitch_low] = True
        fixed = (~region)[:, None].expand(T, P) | sounding
        return states.expand(N, T, P).clone(), velocity.expand(N, T, P).clone(), fixed.expand(N, T, P).clone()

    # ------------------------------------------------------------------ Level 0
    def _known_structure(self, structure, B, gen_bars, prompt_tempo, prompt_density, device):
        """(B,) tempo and density classes that are given (-1 = to generate): the user's
        structure, and the prompt's bars outside the region."""
        cfg = self.config
        tempo = torch.full((B,), -1, dtype=torch.long, device=device)
        density = torch.full((B,), -1, dtype=torch.long, device=device)
        if prompt_tempo is not None:
            pb = len(prompt_tempo)
            keep = ~gen_bars[:pb].to(device)
            tempo[:pb][keep] = tempo_to_class(prompt_tempo[keep], cfg)
            density[:pb][keep] = density_to_class(prompt_density[keep], cfg)
            # continuation: new bars start from the prompt's last tempo unless told otherwise
        for name, target, convert in (("tempo", tempo, tempo_to_class), ("density", density, density_to_class)):
            values = (structure or {}).get(name)
            if values is None:
                continue
            if len(values) != B:
                raise ValueError(f"structure[{name!r}] has {len(values)} values for {B} bars")
            for i, v in enumerate(values):
                if v is None:
                    continue
                v = check_curve_value(name, i + 1, v, cfg.density_max)  # finite, in the model's range
                target[i] = convert(torch.tensor(v, device=device), cfg)
        for name in structure or {}:
            if name not in ("tempo", "density"):
                raise ValueError(f"structure has an unknown key {name!r} (allowed: 'tempo', 'density')")
        return tempo, density

    @torch.profiler.record_function("fractalmidi.decode_structure")  # a label in torch.profiler traces
    def _decode_structure(self, tempo_known, density_known, lengths, N, num_iterations, temperature, generator):
        """Iterative masked decoding of (N, 2B) tokens: B tempo classes then B density classes."""
        cfg = self.config
        B = len(tempo_known)
        known = torch.cat([tempo_known, density_known]).expand(N, 2 * B)  # (N, 2B)
        tokens = known.clone()
        masked = tokens < 0
        counts = masked_counts_batched(masked.sum(1), num_iterations, cfg.mask_schedule)  # (iters, N)
        valid = torch.ones(N, B, dtype=torch.bool, device=tokens.device)
        for it in range(num_iterations):
            ids_t = torch.where(masked[:, :B], cfg.tempo_bins, tokens[:, :B].clamp(min=0))
            ids_d = torch.where(masked[:, B:], cfg.density_bins, tokens[:, B:].clamp(min=0))
            _, tempo_logits, density_logits = self._pass(self.structure, ids_t, ids_d, lengths.expand(N, B), valid)
            st, ct = sample_categorical(tempo_logits, temperature, generator, self._top_p)  # (N, B)
            sd, cd = sample_categorical(density_logits, temperature, generator, self._top_p)
            sample, conf = torch.cat([st, sd], 1), torch.cat([ct, cd], 1)
            tokens = torch.where(masked, sample, tokens)
            masked = choose_tokens_to_keep_masked(conf, masked, counts[it], generator, cfg.remask_mode)
            self._record("structure", it, tokens.clone())
            self._progress("structure", 1)
        return tokens[:, :B], tokens[:, B:]

    # ------------------------------------------------------------------ Level 1
    def _guided(self, level, cond_args, cfg_scale, drop_index, want_uncond=False, cache=None, **level_kwargs):
        """One pass of a content level with classifier-free guidance: cond and uncond batched
        together (one sequential pass). Returns (cond outputs, uncond outputs or None).

        The level's condition (its parent state, or the null condition where dropped) does not
        change between iterations, so its adaLN parameters are computed once into `cache` (a
        dict kept by the caller for the whole level) and reused."""
        N = cond_args[0].shape[0]
        both = cfg_scale != 1.0 or want_uncond
        args = [torch.cat([a, a]) if (both and torch.is_tensor(a)) else a for a in cond_args]
        device = cond_args[0].device
        drop = torch.zeros(N, dtype=torch.bool, device=device)
        args[drop_index] = torch.cat([drop, ~drop]) if both else drop
        key = "cond+uncond" if both else "cond"
        if cache is None:
            cache = {}
        if key not in cache:
            cache[key] = _condition_runs(level, args[drop_index - 1], args[drop_index])
        out = self._pass(level, *args, modulations=cache[key], **level_kwargs)
        if not both:
            return out, None
        return tuple(o if o is None else o[:N] for o in out), tuple(o if o is None else o[N:] for o in out)

    @torch.profiler.record_function("fractalmidi.decode_harmony")  # a label in torch.profiler traces
    def _decode_harmony(self, known_pcs, patch_region, patch_position, parent, num_iterations, temperature, cfg_scale,
                        refine_ratio, refine_rounds, generator, conditions):
        N, H, _ = known_pcs.shape
        pcs = known_pcs.clone()
        masked = patch_region[None, :].expand(N, H).clone()
        valid = torch.ones(N, H, dtype=torch.bool, device=pcs.device)
        counts = masked_counts_batched(masked.sum(1), num_iterations, self.config.mask_schedule)

        def predict():
            (_, logits), unc = self._guided(self.harmony, (pcs, masked, patch_position, parent, None, valid), cfg_scale, 4, cache=conditions)
            if unc is not None:
                logits = cfg_logits(logits, unc[1], cfg_scale)
            sample, conf = sample_bernoulli(logits, temperature, generator)  # (N, H, 12)
            return sample.float(), conf.clamp_min(1e-6).log().sum(-1).exp()  # joint confidence (N, H)

        for it in range(num_iterations):
            sample, conf = predict()
            pcs = torch.where(masked[..., None], sample, pcs)
            masked = choose_tokens_to_keep_masked(conf, masked, counts[it], generator, self.config.remask_mode)
            self._record("harmony", it, pcs.clone())
            self._progress("harmony", 1)
        editable = patch_region[None, :].expand(N, H)
        for r in range(refine_rounds):
            masked = refine_mask(torch.ones_like(editable), refine_ratio, generator, editable=editable)
            sample, _ = predict()
            pcs = torch.where(masked[..., None], sample, pcs)
            self._record("harmony", num_iterations + r, pcs.clone())
            self._progress("harmony", 1)
        return pcs

    # ------------------------------------------------------------------ Level 2
    @torch.profiler.record_function("fractalmidi.decode_notes")  # a label in torch.profiler traces
    def _decode_notes(self, known_states, known_velocity, fixed, region, bar_position, parent, num_iterations,
                      temperature, cfg_scale, refine_ratio, refine_rounds, generator, return_influence, plan=None):
        cfg = self.config
        conditions = {}  # the level's adaLN parameters, computed at the first pass
        N, T, P = known_states.shape
        states, velocity = known_states.clone(), known_velocity.clone()
        masked = region[None, :].expand(N, T).clone()
        valid = torch.ones(N, T, dtype=torch.bool, device=states.device)
        counts = masked_counts_batched(masked.sum(1), num_iterations, cfg.mask_schedule)
        influence = None

        def predict(last):
            want = last and return_influence
            (h, s_logits, _), unc = self._guided(
                self.notes, (states, velocity, masked, bar_position, parent, None, valid), cfg_scale, 5, want,
                cache=conditions, with_velocity=False,
            )
            nonlocal influence
            if unc is not None:
                if last:
                    influence = (softmax_classes(s_logits) - softmax_classes(unc[1])).abs().sum(-1) / 2  # (N, T, P)
                if cfg_scale != 1.0:
                    s_logits = cfg_logits(s_logits, unc[1], cfg_scale)
            # one contiguous plane per state (silent, onset, held): what follows reads one state at a time
            s_logits = class_planes(s_logits.float()).movedim(0, -1)
            # how long notes last follows the model's own estimate: neither the temperature nor
            # top_p (which sharpen and cut the tails) nor the plan's onset offset shortens notes
            continuation = softmax_classes(s_logits)
            s_logits = apply_temperature(s_logits, temperature)
            if plan is not None:  # each bar's onsets: what is committed plus what is expected = the plan
                bar_index, wanted = plan  # (T,), (N, B)
                active = masked[..., None] & ~fixed  # (N, T, P) cells sampled now
                onsets = ((states == 1) & ~active).float().sum(-1)  # (N, T) onsets already in place
                have = torch.zeros_like(wanted).index_add_(1, bar_index, onsets)
                offset = fit_class_count(s_logits, 1, bar_index, wanted - have, active)  # (N, B)
                s_logits[..., 1] += offset[:, bar_index, None]
            probs = softmax_classes(top_p_filter(s_logits, self._top_p))  # (N, T, P, 3)
            active = masked[..., None] & ~fixed  # (N, T, P)
            s, conf = sample_note_states(probs, active, states, generator, continuation)  # (N, T, P)
            onsets = (s == 1) & active  # velocities are drawn only where a note starts: the
            v = torch.zeros_like(s)     # velocity head runs on those steps alone
            if onsets.any():
                n_idx, t_idx = onsets.any(-1).nonzero(as_tuple=True)  # (K,) steps with an onset
                v_logits = self.notes.velocity_logits(h[n_idx, t_idx])  # (K, P, V)
                if unc is not None and cfg_scale != 1.0:
                    v_logits = cfg_logits(v_logits, self.notes.velocity_logits(unc[0][n_idx, t_idx]), cfg_scale)
                cells = onsets[n_idx, t_idx]  # (K, P)
                v_cls, _ = sample_categorical(v_logits[cells], temperature, generator, self._top_p)
                chosen = torch.zeros_like(cells, dtype=v.dtype)
                chosen[cells] = class_to_velocity(v_cls, cfg).to(v.dtype)
                v[n_idx, t_idx] = chosen
            step_conf = conf.clamp_min(1e-6).log().mean(-1).exp()  # (N, T): geometric mean over pitches
            return s, v, step_conf

        def commit(s, v, where):
            nonlocal states, velocity
            cells = where[..., None] & ~fixed
            states = torch.where(cells, s, states)
            velocity = torch.where(cells, v, velocity)

        for it in range(num_iterations):
            s, v, conf = predict(last=(it == num_iterations - 1 and refine_rounds == 0))
            commit(s, v, masked)
            masked = choose_tokens_to_keep_masked(conf, masked, counts[it], generator, cfg.remask_mode)
            self._record("notes", it, states.clone())
            self._progress("notes", 1)
        editable = region[None, :].expand(N, T)
        for r in range(refine_rounds):
            masked = refine_mask(torch.ones_like(editable), refine_ratio, generator, editable=editable)
            s, v, _ = predict(last=(r == refine_rounds - 1))
            commit(s, v, masked)
            self._record("notes", num_iterations + r, states.clone())
            self._progress("notes", 1)
        # a hold whose note start was re-sampled away in a later iteration is silence
        states = drop_orphan_holds(states, fixed)
        return states, velocity * (states == 1), influence

    # ------------------------------------------------------------------ helpers
    def _bar_tempo(self, tempo_cls, structure, prompt_tempo, gen_bars):
        """(N, B) BPM per bar: the user's exact values and the prompt's where given, else the
        generated class centres."""
        tempo = class_to_tempo(tempo_cls, self.config)
        user = (structure or {}).get("tempo")
        for i, v in enumerate(user or []):
            if v is not None:
                tempo[:, i] = float(v)
        if prompt_tempo is not None:
            pb = len(prompt_tempo)
            keep = ~gen_bars[:pb].to(tempo.device)
            tempo[:, :pb][:, keep] = prompt_tempo[keep]
        return tempo

    def _bar_density(self, density_cls, structure, prompt_density, gen_bars):
        """(N, B) the density Level 0 settled on: the user's exact values and the prompt's where
        given, else the class centres (onsets per step)."""
        density = class_to_density(density_cls, self.config)
        for i, v in enumerate((structure or {}).get("density") or []):
            if v is not None:
                density[:, i] = float(v)
        if prompt_density is not None:
            pb = len(prompt_density)
            keep = ~gen_bars[:pb].to(density.device)
            density[:, :pb][:, keep] = prompt_density[keep]
        return density

    def _pass(self, fn, *args, **kwargs):
        self._passes += 1
        return fn(*args, **kwargs)

    def _record(self, level, iteration, tokens):
        if self._intermediates is not None:
            self._intermediates.append({"level": level, "iteration": iteration, "tokens": tokens.cpu()})


class _Progress:
    """Progress of `generate`: nothing, a tqdm bar, or a callback (level, done, total)."""

    def __init__(self, progress, total):
        self.callback, self.bar, self.done, self.total = None, None, 0, total
        if progress is True:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc="generate", unit="pass")
        elif callable(progress):
            self.callback = progress

    def __call__(self, level, n):
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        if self.callback is not None:
            self.callback(level, self.done, self.total)

    def close(self):
        if self.bar is not None:
            self.bar.close()
