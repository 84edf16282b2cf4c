"""The hierarchical unfolding: `FractalMIDIModel.generate`, and the one decoding loop.

This file travels with Hub checkpoints for `trust_remote_code`: at import time it needs only
torch, transformers and its sibling files; turning a result into a `Piece` or a MIDI file
imports the `fractalmidi` package then.

Level by level, top down (`config.levels`), each level decoded in parallel by iterative masked
prediction (MaskGIT, `decode_level`): start with the unknown tokens masked; at every iteration
predict all of them, sample them (temperature, top-p, classifier-free guidance), keep the most
confident and re-mask the rest for the next iteration, fewer each time (cosine schedule). After
a content level, `refine_rounds` times re-mask `refine_ratio` of what it generated and predict
it again; then one pass gives the levels below their condition. What differs between levels is
the level's own (`modeling_fractalmidi.Level`); the schedule maths is `sampling.py`'s. The number
of network passes depends on the iterations, never on the length. Decoding defaults come from
the model's `generation_config` (a transformers `GenerationConfig`); everything that belongs
to one call lives in a `GenerationRun`, never on the model, so threads may share a model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch
from transformers import GenerationConfig
from transformers.utils import ModelOutput, cached_file

from . import limits_fractalmidi as limits
from .limits_fractalmidi import check_number, check_time_signature
from .sampling import bar_pattern_tensors, choose_tokens_to_keep_masked, masked_counts_batched, refine_mask

HELD = 2
# the decoding fields of the generation config (all of them may be given to `generate`)
GENERATION_FIELDS = ("temperature", "top_p", "guidance_scale", "num_iterations", "refine_ratio", "refine_rounds",
                     "follow_structure", "follow_form", "variation", "temperature_scale", "chord_gain", "melody_gain",
                     "sustain", "rhythm_repeat", "rhythm_prior")
MELODY_VELOCITY = 96  # the velocity of the melody's notes in the note level's roll


@dataclass
class Grid:
    """Where every level's tokens lie, for a batch of N pieces of B bars and T steps:
    lengths (N, B) steps per bar, bar_mask (N, B) real bars; bar_index, bar_position (step in
    its bar) and step_mask (N, T) per step."""

    lengths: torch.Tensor
    bar_mask: torch.Tensor
    bar_index: torch.Tensor
    bar_position: torch.Tensor
    step_mask: torch.Tensor
    time_signatures: torch.Tensor | None = None  # (N, B, 2) numerator, denominator (0 padding)
    form: torch.Tensor | None = None  # (N, B, 4) the bars' form inputs (`structure.form_features`), 0 unknown
    key: torch.Tensor | None = None  # (N, 2) tonic pitch class and mode (0 major, 1 minor), -1 unknown


def default_generation_config(config, **saved) -> GenerationConfig:
    """The decoding defaults: the fields of a saved `generation_config.json` (`saved`) over the
    model config's own (`default_temperature`, `default_top_p`, `num_iterations`, `refine_*`,
    where checkpoints made before the generation config held them keep them)."""
    saved.pop("_from_model_config", None)  # set, custom fields would be dropped
    defaults = dict(do_sample=True, temperature=config.default_temperature, top_p=config.default_top_p,
                    guidance_scale=1.0, num_iterations=list(config.num_iterations), refine_ratio=config.refine_ratio,
                    refine_rounds=config.refine_rounds, follow_structure=True, follow_form=True, variation=0.25,
                    temperature_scale=None, chord_gain=2.5, melody_gain=0.0, sustain=0.0, rhythm_repeat=0.0, rhythm_prior=0.0)
    return GenerationConfig(**{**defaults, **saved})


@dataclass
class FractalMIDIGeneration(ModelOutput):
    """What `generate` returns: the pieces as tensors, and how they were made.

    states (N, T, P): per step and pitch 0 silent / 1 onset / 2 held; velocity (N, T, P) on
    onsets; bar_tempo (N, B) BPM; requested_density (N, B) the density Level 0 asked for
    (onsets per step); time_signatures (B, 2); harmony (N, H, 12) or None;
    num_forward_passes: sequential network passes (a batched cond + uncond pass counts once);
    influence (N, T, P): |p_cond - p_uncond| of the note states at the last note iteration
    (where the condition changed the prediction), when guidance ran; intermediates: each
    level after each iteration, when asked for; melody (N, T) with a melody level: per step 0
    rest, 1 hold, 2 + k the onset of pitch `melody_pitch_low + k` (-1 where not generated: a
    prompt's bars), else None; chords (N, beats) with a chord level: per beat 0 no chord,
    1 + 14 * root + quality (`structure.QUALITIES`), -1 where not generated, else None
    (`chord_spans` names them); rhythm (N, T) with a rhythm level: the notes asked to start at
    each step (0 .. `rhythm_max_count`), else None.
    """

    states: torch.Tensor | None = None
    velocity: torch.Tensor | None = None
    bar_tempo: torch.Tensor | None = None
    requested_density: torch.Tensor | None = None
    time_signatures: torch.Tensor | None = None
    steps_per_beat: int | None = None
    pitch_low: int | None = None
    pitch_high: int | None = None
    num_forward_passes: int | None = None
    harmony: torch.Tensor | None = None
    influence: torch.Tensor | None = None
    intermediates: list | None = None
    prompt: object = None  # the prompt Piece, when inpainting / continuing
    region: torch.Tensor | None = None  # (T,) bool: steps that were generated
    tempo_map: tuple | None = None  # exact (steps, bpm) of the prompt, kept when inpainting
    melody: torch.Tensor | None = None  # (N, T) melody tokens, with a melody level
    melody_pitch_low: int | None = None
    chords: torch.Tensor | None = None  # (N, beats) chord tokens, with a chord level
    rhythm: torch.Tensor | None = None  # (N, T) onsets asked per step, with a rhythm level
    form: str | None = None  # the form followed ("i4A8B8o4"), given or drawn from the model's forms
    key: str | None = None  # the key ("G:maj"), given or drawn; None when none was used
    given_melody: object = None  # (K, 4) the melody notes the caller gave, kept exactly
    given_melody_steps: torch.Tensor | None = None  # (T,) bool: the steps the caller's melody covers

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

    def melody_notes(self, index: int = 0, velocity: int = 100):
        """Sample `index`'s melody (a model with a melody level) as notes (K, 4): pitch, start
        step, end step (exclusive), velocity; monophonic, sorted by start. None without one."""
        import numpy as np

        if self.melody is None:
            return None
        tokens = self.melody[index].cpu().numpy()
        given = None
        if self.given_melody is not None:  # the caller's melody, exactly, where it was given
            given = np.asarray(self.given_melody, dtype=np.int64).reshape(-1, 4)
            covered = self.given_melody_steps.cpu().numpy()
            if covered.all():
                return given.copy()
            tokens = np.where(covered, -1, tokens)
        notes, current = [], None
        for t, tok in enumerate(tokens.tolist()):
            if tok == 1 and current is not None:  # hold: the note goes on
                current[2] = t + 1
                continue
            if current is not None:
                notes.append(current)
                current = None
            if tok >= 2:
                current = [self.melody_pitch_low + tok - 2, t, t + 1, velocity]
        if current is not None:
            notes.append(current)
        out = np.asarray(notes, dtype=np.int64).reshape(-1, 4)
        if given is not None:  # a generated note ends where a given one starts
            out = np.concatenate([out, given])
            out = out[np.argsort(out[:, 1], kind="stable")]
            out[:-1, 2] = np.minimum(out[:-1, 2], out[1:, 1])
            out = out[out[:, 2] > out[:, 1]]
        return out

    def chord_names(self, index: int = 0) -> list:
        """Sample `index`'s chord per beat as a name ("C:maj", "Bb:min7"), "N" for no chord,
        None where not generated; None without a chord level."""
        from fractalmidi.structure import QUALITIES

        if self.chords is None:
            return None
        names = []
        for tok in self.chords[index].tolist():
            if tok < 0:
                names.append(None)
            elif tok == 0:
                names.append("N")
            else:
                root, quality = divmod(tok - 1, len(QUALITIES))
                names.append(f"{ROOT_NAMES[root]}:{QUALITIES[quality]}")
        return names

    def chord_spans(self, index: int = 0) -> list:
        """Sample `index`'s chords as runs of equal chords over consecutive beats: (start step,
        end step (exclusive, at most the piece's end), name like "C:maj"); beats with no chord
        (N) or not generated are in no span. [] without a chord level."""
        names = self.chord_names(index)
        if names is None:
            return []
        spb, T = self.steps_per_beat, self.states.shape[1]
        spans = []
        for b, name in enumerate(names):
            if name is None or name == "N":
                continue
            start, end = b * spb, min((b + 1) * spb, T)
            if spans and spans[-1][2] == name and spans[-1][1] == start:
                spans[-1] = (spans[-1][0], end, name)
            else:
                spans.append((start, end, name))
        return spans

    def to_song(self, index: int = 0):
        """Sample `index` as (accompaniment, melody): the melody (`melody_notes`: the melody
        level's line, or the caller's melody; None without a melody level) and the note level's
        piece (`to_piece`) without the melody's notes (in the generated region: a prompt's notes
        outside it all stay). The note level was trained on whole
        songs (melody included): `generate` lays the melody into its roll as fixed notes and
        lets it write the accompaniment around them, so here they are taken out again."""
        import numpy as np

        piece, melody = self.to_piece(index), self.melody_notes(index)
        if melody is None or not len(melody) or not len(piece.notes):
            return piece, melody
        notes = piece.notes
        key = notes[:, 0].astype(np.int64) * (1 << 32) + notes[:, 1].astype(np.int64)
        mkey = melody[:, 0].astype(np.int64) * (1 << 32) + melody[:, 1].astype(np.int64)
        laid = np.isin(key, mkey)
        if self.region is not None:  # a prompt's notes outside the region stay, even where they double the melody
            region = self.region.cpu().numpy()
            start = notes[:, 1].astype(np.int64)
            laid &= (start < len(region)) & region[np.minimum(start, len(region) - 1)]
        return piece.replace_notes(notes[~laid]), melody

    def to_midi(self, path, index: int = 0, merge: bool = False):
        """Write sample `index` as a MIDI file (atomically); returns the path. With a melody
        level, the melody is a track named "Melody" beside the "Piano" track (`to_song`,
        `midi_io.write_song_midi`; with `merge` one "Piano" track holds both); with a chord
        level, the chords are marker events (`chord_spans`; an "N" marker where no chord
        follows); the key (`key`, when one was given or drawn) is the key signature; else one
        track as before."""
        from fractalmidi.midi_io import write_midi

        if self.melody is not None or self.chords is not None or self.key is not None:
            from fractalmidi.midi_io import write_song_midi

            piece, melody = self.to_song(index)
            return write_song_midi(path, piece, melody=melody, chords=self.chord_spans(index) if self.chords is not None else None,
                                   key=self.key, merge=merge)
        return write_midi(self.to_piece(index), path)

    def to_musicxml(self, path, index: int = 0, title: str | None = None):
        """Write sample `index` as a MusicXML lead sheet (atomically; `leadsheet.write_musicxml`,
        needs music21); returns the path: the melody level's line (`melody_notes`) with the
        chord level's symbols (`chord_spans`; none without a chord level), the piece's time
        signatures, bar lines and first tempo. ValueError when the model has no melody level."""
        if self.melody is None:
            raise ValueError("this model has no melody level: a lead sheet needs one (see hub_configs/songs_tiny.json)")
        from fractalmidi.leadsheet import write_musicxml

        piece = self.to_piece(index)
        tempo = float(piece.tempo_bpm[0]) if len(piece.tempo_bpm) else None
        return write_musicxml(path, self.melody_notes(index), self.chord_spans(index), None, piece.time_signatures,
                              piece.bar_starts, piece.steps_per_beat, title=title,
                              tempo_bpm=round(tempo, 2) if tempo else None)


ROOT_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")  # chord roots, pitch class order


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


def decode_level(level, run, above):
    """One level by iterative masked prediction, then its refinement rounds; the level says what
    its tokens are and how they are sampled, this loop when and which. Returns the decoded
    tokens and the level's inputs."""
    tokens, editable, inputs = level.start(run, above)  # editable (N, L): the tokens to generate
    iterations = run.iterations[level.name]
    rounds = run.refine_rounds if level.refines else 0
    masked = editable.clone()
    counts = masked_counts_batched(masked.sum(1), iterations, run.mask_schedule)  # (iterations, N) still masked after each
    tie = run.ties(level, editable)  # (N, L) the token each token copies (itself where none), or None
    run.temperature = run.level_temperature[level.name]  # the level's own: temperature x its temperature_scale
    follow = tie
    for it in range(iterations + rounds):
        if it >= iterations:  # refinement: re-mask a random share of what the level generated
            masked = refine_mask(torch.ones_like(editable), run.refine_ratio, run.generator, editable=editable)
            if tie is not None:  # a `variation` share of the repeats is re-sampled on its own, the rest follows
                own = torch.arange(tie.shape[1], device=tie.device).expand_as(tie)
                loose = (torch.rand(tie.shape, generator=run.generator) < run.variation).to(tie.device) & (tie != own)
                follow = torch.where(loose, own, tie)
                masked = torch.where(loose, True, _follow(masked, follow)) & editable
        sample, confidence = level.sample(run, inputs, tokens, masked, last=it == iterations + rounds - 1)
        if follow is not None:  # repeats take their source's sample
            sample = _follow(sample, follow)
            confidence = _follow(confidence, follow)
        tokens = level.commit(inputs, tokens, sample, masked)
        if it < iterations:  # keep the most confident, re-mask the rest for the next iteration
            # a repeat follows its source's mask, so fewer tokens may be masked than the schedule
            # counts (a repeat kept masked while its source was kept): keep at most those masked
            keep = torch.minimum(counts[it].to(masked.device), masked.sum(1))
            masked = choose_tokens_to_keep_masked(confidence, masked, keep, run.generator, level.remask_mode(run.config))
            if tie is not None:  # a repeat stays masked exactly as long as its source
                masked = _follow(masked, tie) & editable
        run.step(level.name, it, level.shown(tokens))
    return level.finish(run, inputs, tokens), inputs


def _follow(x, tie):
    """x (N, L, ...) (or a tuple of such) with every token replaced by the one `tie` (N, L) names."""
    if isinstance(x, tuple):
        return tuple(_follow(v, tie) for v in x)
    index = tie.view(*tie.shape, *[1] * (x.dim() - 2)).expand_as(x)
    return x.gather(1, index)


class GenerationRun:
    """Everything one `generate` call owns: its decoding settings (the generation config with the
    call's overrides, checked), random generator, bars and region, the prompt's tokens, the
    conditions computed so far, and its pass count, intermediates and progress."""

    def __init__(self, model, generation_config, overrides, seed, num_samples, progress, return_intermediates,
                 return_influence):
        cfg = model.config
        self.model, self.config, self.device = model, cfg, model.device
        unknown = sorted(set(overrides) - set(GENERATION_FIELDS))
        if unknown:
            raise TypeError(f"generate() got unexpected keyword arguments {unknown}; decoding settings: {GENERATION_FIELDS}")
        given = generation_config.to_diff_dict() if generation_config is not None else {}  # its fields set
        overrides = {k: v for k, v in overrides.items() if v is not None}  # None: the default
        gen = default_generation_config(cfg, **{**model.generation_config.to_dict(), **given, **overrides})
        # the ranges every front-end uses too (limits_fractalmidi): checked before any work
        self.temperature = check_number("temperature", gen.temperature, limits.TEMPERATURE)
        self.guidance_scale = check_number("guidance_scale", gen.guidance_scale, limits.GUIDANCE_SCALE)
        self.top_p = check_number("top_p", gen.top_p, limits.TOP_P, low_open=True)
        iters = list(gen.num_iterations)
        if len(iters) != len(cfg.levels):
            raise ValueError(f"num_iterations must give one count >= 1 per level {cfg.levels}, got {iters}")
        self.iterations = {name: check_number(f"num_iterations[{i}] ({name})", n, limits.ITERATIONS, integer=True)
                           for i, (n, name) in enumerate(zip(iters, cfg.levels))}
        self.refine_ratio = check_number("refine_ratio", gen.refine_ratio, limits.REFINE_RATIO)
        self.refine_rounds = check_number("refine_rounds", gen.refine_rounds, limits.REFINE_ROUNDS, integer=True)
        self.follow_structure = bool(gen.follow_structure)
        self.follow_form = bool(getattr(gen, "follow_form", True))
        self.variation = check_number("variation", getattr(gen, "variation", 0.25), limits.VARIATION)
        self.chord_gain = check_number("chord_gain", getattr(gen, "chord_gain", 2.5), limits.CHORD_GAIN)
        self.melody_gain = check_number("melody_gain", getattr(gen, "melody_gain", 0.0), limits.MELODY_GAIN)
        self.sustain = check_number("sustain", getattr(gen, "sustain", 0.0), limits.SUSTAIN, low_open=False)
        self.rhythm_repeat = check_number("rhythm_repeat", getattr(gen, "rhythm_repeat", 0.0), limits.RHYTHM_REPEAT)
        self.rhythm_prior = check_number("rhythm_prior", getattr(gen, "rhythm_prior", 0.0), limits.RHYTHM_PRIOR)
        patterns = getattr(model.generation_config, "rhythm_patterns", None)  # `sampling.fit_bar_patterns`
        self.rhythm_patterns = bar_pattern_tensors(patterns, self.device) if patterns and self.rhythm_prior else None
        self.melody_top = None  # (N, T) the laid melody's roll pitch at each step, -1 where none
        self.chord_tones = None  # the given chords' pitch classes per beat and which beats are given
        self.chord_bass = None  # (beats,) the bass pitch class of the given slash chords (F/A: 9), -1 elsewhere
        self.step_counts = None  # (N, T) the rhythm level's onsets per step, which the note level starts
        self.bar_chords = None  # the given chord tokens of each bar's beats, one tuple per bar
        scales = getattr(gen, "temperature_scale", None)
        scales = [1.0] * len(cfg.levels) if scales is None else list(scales)
        if len(scales) != len(cfg.levels):
            raise ValueError(f"temperature_scale must give one factor per level {cfg.levels}, got {scales}")
        self.level_temperature = {
            name: check_number("temperature x temperature_scale", self.temperature * check_number(
                f"temperature_scale[{i}] ({name})", f, limits.TEMPERATURE_SCALE), limits.TEMPERATURE)
            for i, (f, name) in enumerate(zip(scales, cfg.levels))}
        self.form_prior = list(getattr(model.generation_config, "form_prior", None) or [])
        self.minor_share = getattr(model.generation_config, "minor_share", None)
        self.form_name, self.key_name, self.bar_source = None, None, None
        self.phrase_start = None  # (B,) bool: the bars that begin a phrase of the form, where there is one
        self.num_samples = check_number("num_samples", num_samples, limits.NUM_SAMPLES, integer=True)
        self.mask_schedule, self.remask_mode, self.return_influence = cfg.mask_schedule, cfg.remask_mode, return_influence
        self.generator = torch.Generator(device="cpu")
        seed = int(torch.randint(0, 2**31 - 1, ()).item()) if seed is None else check_number(
            "seed", seed, limits.SEED, integer=True)
        self.generator.manual_seed(seed)
        self.passes, self.done, self.conditions, self.outputs = 0, 0, {}, {}
        self.intermediates = [] if return_intermediates else None
        levels = model.levels
        self.total = sum(lv.num_passes(self.iterations[lv.name], self.refine_rounds, lv is levels[-1]) for lv in levels)
        self.callback = progress if callable(progress) else None
        self.bar = None
        if progress is True:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, desc="generate", unit="pass")

    # ---------------------------------------------------------------- the piece to make
    def plan(self, num_bars, time_signatures, structure, prompt, inpaint_bars):
        """The bars (time signature, length, which to generate), the grid every level's tokens
        lie on, and what the prompt and the user's structure fix."""
        cfg, N, device = self.config, self.num_samples, self.device
        sigs, lengths, bar_starts, self.gen_bars = self._bars(num_bars, time_signatures, prompt, inpaint_bars)
        self.time_signatures, self.num_bars, self.structure, self.prompt = sigs, len(lengths), structure or {}, prompt
        self.bar_starts = bar_starts
        B, T = len(lengths), int(bar_starts[-1])
        if int(lengths.max()) > cfg.max_bar_len:
            raise ValueError(f"a bar of {int(lengths.max())} steps is longer than max_bar_len = {cfg.max_bar_len}")
        steps = torch.arange(T, device=device)
        bar_index = torch.bucketize(steps, bar_starts[1:].to(device), right=True)  # (T,)
        bar_position = steps - bar_starts.to(device)[bar_index]
        self.region = self.gen_bars.to(device)[bar_index]  # (T,) steps to generate
        self.grid = Grid(lengths.to(device).expand(N, B), torch.ones(N, B, dtype=torch.bool, device=device),
                          bar_index.expand(N, T), bar_position.expand(N, T), torch.ones(N, T, dtype=torch.bool, device=device),
                          time_signatures=sigs.to(device).long().expand(N, B, 2))
        P = cfg.num_pitches
        self.known = {"states": torch.zeros(N, T, P, dtype=torch.long, device=device),
                      "velocity": torch.zeros(N, T, P, dtype=torch.long, device=device),
                      "fixed": torch.zeros(N, T, P, dtype=torch.bool, device=device)}  # cells the notes must keep
        self.tempo_map = None
        if prompt is not None:
            kept = torch.as_tensor(_kept_notes(prompt.notes, self.region.cpu().numpy()), dtype=torch.long, device=device)
            self.known = self._cells_of(kept, T, N, self.region)
            self.prompt_tempo = torch.as_tensor(prompt.bar_tempo(), dtype=torch.float32, device=device)
            self.prompt_density = torch.as_tensor(prompt.bar_density(), dtype=torch.float32, device=device)
            if B == prompt.num_bars:  # inpainting: the prompt's tempo map stays exactly
                self.tempo_map = (prompt.tempo_steps.copy(), prompt.tempo_bpm.copy())

    def given_chords(self, chords):
        """The user's chords: one entry per bar, None (generated) or a list of 1+ (root, quality,
        bass) (as `controls.chords` gives; quality a name in `structure.QUALITIES` or "N")
        splitting the bar's beats evenly, earlier chords taking the remainder -> per-beat chord
        tokens in `known["chords"]` (-1 where free), kept by the chord level. The chord level's
        tokens have no bass; a slash chord's bass (F/A) goes to the note level (`chord_bass`),
        which puts that pitch class under the others in the bass register."""
        if chords is None:  # nothing imported: this file also runs as Hub remote code, without the package
            return
        from fractalmidi.structure import QUALITIES, QUALITY_ID

        if "chords" not in self.config.levels:
            raise ValueError(f"chords= needs a model with a chord level; this one has levels {list(self.config.levels)} "
                             f"(see hub_configs/songs_tiny.json)")
        chords = list(chords)
        if len(chords) != self.num_bars:
            raise ValueError(f"chords: {len(chords)} bars of chords for a piece of {self.num_bars} bars (one entry per bar, None = free)")
        spb = self.config.steps_per_beat
        starts = [int(v) for v in self.bar_starts]
        L = -(-starts[-1] // spb)
        bar_beats = [(-(-a // spb), -(-b // spb)) for a, b in zip(starts[:-1], starts[1:])]  # the beats starting in each bar
        tokens = torch.full((L,), -1, dtype=torch.long)
        bass = torch.full((L,), -1, dtype=torch.long)  # a slash chord's bass pitch class per beat (-1: none)
        for b, bar in enumerate(chords):
            if bar is None:
                continue
            first, stop = bar_beats[b]
            beats = stop - first
            bar = list(bar)
            if not bar:
                raise ValueError(f"chords, bar {b + 1}: no chord (give None to leave the bar free)")
            if len(bar) > beats:
                raise ValueError(f"chords, bar {b + 1}: {len(bar)} chords for a bar of {beats} beats")
            ids, basses = [], []
            for chord in bar:
                try:
                    root, quality = int(chord[0]), chord[1]
                    low = int(chord[2]) if len(chord) > 2 and chord[2] is not None else root
                except (TypeError, IndexError, ValueError):
                    raise ValueError(f"chords, bar {b + 1}: {chord!r} is not a (root, quality, bass) chord") from None
                if quality == "N":
                    ids.append(0)
                    basses.append(-1)
                    continue
                if quality not in QUALITY_ID or not 0 <= root < 12:
                    raise ValueError(f"chords, bar {b + 1}: {chord!r}: root must be 0-11 and quality one of "
                                     f"{QUALITIES} or 'N'")
                if not 0 <= low < 12:
                    raise ValueError(f"chords, bar {b + 1}: {chord!r}: the bass must be a pitch class 0-11")
                ids.append(1 + len(QUALITIES) * root + QUALITY_ID[quality])
                basses.append(low if low != root else -1)  # only a slash chord asks for its bass
            base, extra = divmod(beats, len(ids))
            at = first
            for i, (tok, low) in enumerate(zip(ids, basses)):
                n = base + (1 if i < extra else 0)
                tokens[at: at + n] = tok
                bass[at: at + n] = low
                at += n
        self.known["chords"] = tokens.to(self.device).expand(self.num_samples, L).clone()
        from fractalmidi.structure import chord_pitch_classes

        pcs = torch.zeros(L, 12)  # the given chords' pitch classes per beat (all 0: no chord given)
        for beat, tok in enumerate(tokens.tolist()):
            if tok > 0:
                root, quality = divmod(tok - 1, len(QUALITIES))
                pcs[beat, sorted(chord_pitch_classes(root, int(quality)))] = 1.0
        self.chord_tones = pcs.to(self.device), tokens.to(self.device) >= 0  # (beats, 12), (beats,) given
        self.chord_bass = bass.to(self.device) if bool((bass >= 0).any()) else None  # (beats,) slash basses
        self.bar_chords = [tuple(tokens[first:stop].tolist()) for first, stop in bar_beats]

    def given_form(self, form, key):
        """The form the bars follow and the key: the caller's (a form string like "i4A8B8o4"
        of exactly the piece's bars, or parsed phrases; a key "G:maj" or (tonic, "maj" / "min")),
        else, for a model that keeps forms (`generation_config.form_prior`: the training songs'
        form strings), one of those drawn and fitted to the bars (`structure.fit_form`). The
        key, when not given: for a model that reads keys (`form_inputs`), the key of the
        caller's chords and melody (`form_fractalmidi.estimate_key`) where there are any, else
        drawn (tonic uniform, minor with the training songs' share). Sets the grid's form
        and key inputs (read with `form_inputs`) and, with `follow_form`, which bar repeats
        which (`structure.repeat_sources`, less the ties the caller's chords contradict):
        repeats copy their source while the level's iterations run, and vary in its
        refinement rounds."""
        B, N, device = self.num_bars, self.num_samples, self.device
        if form is None and key is None and not self.form_prior and not self.config.form_inputs:
            return
        from .form_fractalmidi import (
            MAX_FORM_BARS, Phrase, bar_labels, estimate_key, fit_form, form_features, form_string, parse_form,
            repeat_sources,
        )

        if form is not None:
            phrases = list(form) if isinstance(form, (list, tuple)) else parse_form(form)
            if not phrases or not all(isinstance(p, Phrase) for p in phrases):
                raise ValueError(f"form: {form!r} is not a form string like 'i4A8B8o4'")
            total = sum(p.bars for p in phrases)
            if total > min(MAX_FORM_BARS, self.config.max_bars):
                raise ValueError(f"form: {total} bars in all; this model takes at most {self.config.max_bars}")
            if total != B:
                raise ValueError(f"form {form_string(phrases)!r} has {total} bars, the piece {B}")
        elif self.form_prior:
            pick = int(torch.randint(0, len(self.form_prior), (1,), generator=self.generator))
            phrases = fit_form(parse_form(self.form_prior[pick]), B)
        else:
            phrases = None
        if phrases is not None:
            labels = bar_labels(phrases)
            self.phrase_start = torch.as_tensor(labels.position == 0)
            self.form_name = form_string(phrases)
            feats = form_features(labels.letter, labels.phrase, labels.position, labels.length)
            self.grid.form = torch.as_tensor(feats, device=device).expand(N, B, 4)
            if self.follow_form:
                lengths = (self.bar_starts[1:] - self.bar_starts[:-1]).tolist()
                src = torch.as_tensor(repeat_sources(labels.letter, labels.phrase, labels.position, lengths))
                src = self._agreeing_sources(src)
                self.bar_source = src if bool((src != torch.arange(B)).any()) else None
        if key is not None:
            if isinstance(key, str):
                try:
                    from fractalmidi import controls
                except ImportError:  # Hub remote code without the package
                    raise ValueError("key as a string needs the fractalmidi package; give (tonic 0-11, 'maj' or 'min')") from None
                tonic, mode, name = controls.key(key)
            else:
                tonic, mode, name = int(key[0]), key[1], None
            if mode not in ("maj", "min") or not 0 <= tonic < 12:
                raise ValueError(f"key: {key!r}: tonic 0-11 and mode 'maj' or 'min'")
            self.key_name = name or f"{ROOT_NAMES[tonic]}:{mode}"
        elif self.config.form_inputs and (given := estimate_key(self._given_pitch_classes())) is not None:
            tonic, mode = given  # the key the caller's chords and melody are in
            self.key_name = f"{ROOT_NAMES[tonic]}:{mode}"
        elif self.config.form_inputs and self.minor_share is not None:
            tonic = int(torch.randint(0, 12, (1,), generator=self.generator))
            mode = "min" if float(torch.rand((), generator=self.generator)) < float(self.minor_share) else "maj"
            self.key_name = f"{ROOT_NAMES[tonic]}:{mode}"
        else:
            return
        self.grid.key = torch.tensor([tonic, 0 if mode == "maj" else 1], device=device).expand(N, 2)

    def _agreeing_sources(self, src):
        """Repeat sources (B,) with the ties the caller's chords or density curve contradict
        dropped: a bar repeats its source only where the chords given for the two bars (per
        beat, free beats included) are the same, and their given densities fall in the same
        density class (or neither is given); else the bar follows what was given for it (what
        the caller gives wins over the form: a repeat copies its source's notes, and with them
        the source's chords and density)."""
        B = self.num_bars
        chords = self.bar_chords or [None] * B
        classes = self._given_density_classes()
        out = src.clone()
        for b, s in enumerate(src.tolist()):
            if s != b and (chords[b] != chords[s] or classes[b] != classes[s] or classes[b] == "bad"):
                out[b] = b
        return out

    def _given_density_classes(self) -> list:
        """Per bar, the density class of the caller's density curve there: None where free,
        "bad" for a value the structure level will refuse (it ties nothing)."""
        from .limits_fractalmidi import check_curve_value
        from .tokens_fractalmidi import density_to_class

        B = self.num_bars
        density = list(self.structure.get("density") or [])
        if len(density) != B:
            return [None] * B

        def density_class(bar, v):
            if v is None:
                return None
            try:
                v = check_curve_value("density", bar + 1, v, self.config.density_max)
            except ValueError:
                return "bad"
            return int(density_to_class(torch.tensor(v), self.config))

        return [density_class(b, v) for b, v in enumerate(density)]

    def _given_pitch_classes(self):
        """(12,) how long each pitch class lasts in what the caller gave: the given chords'
        tones (in beats) and the given melody's notes (in beats); all 0 when neither is given."""
        import numpy as np

        w = np.zeros(12)
        if self.chord_tones is not None:
            w += self.chord_tones[0].sum(0).cpu().numpy()  # free beats have no tones
        notes = getattr(self, "given_melody_notes", None)
        if notes is not None and len(notes):
            np.add.at(w, notes[:, 0] % 12, (notes[:, 2] - notes[:, 1]) / self.config.steps_per_beat)
        return w

    def given_melody(self, melody, melody_bars=None):
        """The caller's melody: notes (K, 4) pitch, start step, end step (exclusive), velocity on
        the piece's grid (`Piece.notes` of a melody track), over the bars `melody_bars` (ranges
        [(first, stop), ...], 0-based half-open; default every bar): there it is kept note for
        note (its notes starting there; silence where it has none), elsewhere the melody is
        generated (in the region). As melody-level tokens it is monophonic (a later note cuts an
        earlier one short) and folded by octaves into the level's range; the note level keeps
        its exact notes."""
        if melody is None:
            if melody_bars is not None:
                raise ValueError("melody_bars needs a melody")
            return
        import numpy as np

        if "melody" not in self.config.levels:
            raise ValueError(f"melody= needs a model with a melody level; this one has levels {list(self.config.levels)}")
        notes = np.asarray(melody, dtype=np.int64).reshape(-1, 4) if len(melody) else np.zeros((0, 4), np.int64)
        T, B = int(self.bar_starts[-1]), self.num_bars
        covered = torch.zeros(T, dtype=torch.bool)
        for first, stop in ([(0, B)] if melody_bars is None else melody_bars):
            if not (0 <= first < stop <= B):
                raise ValueError(f"melody_bars {first + 1}-{stop} lie outside the piece's bars 1-{B}")
            covered[int(self.bar_starts[first]): int(self.bar_starts[stop])] = True
        bad = (notes[:, 1] < 0) | (notes[:, 1] >= T) | (notes[:, 2] <= notes[:, 1])
        if bad.any():
            p, st, e, _ = notes[np.argmax(bad)].tolist()
            raise ValueError(f"melody: the note of pitch {p} from step {st} to {e} lies outside the piece's steps 0-{T}")
        off = (notes[:, 0] < self.config.pitch_low) | (notes[:, 0] > self.config.pitch_high)
        if off.any():
            raise ValueError(f"melody: pitch {int(notes[off][0, 0])} is outside the model's range "
                             f"{self.config.pitch_low}-{self.config.pitch_high}")
        notes = notes[covered.numpy()[notes[:, 1]]] if len(notes) else notes  # those starting in melody_bars
        steps = torch.zeros(T, dtype=torch.long)  # data style: 0 rest, 1 hold, 2 + pitch onset
        for k in np.argsort(notes[:, 1], kind="stable"):
            p, st, e, _ = notes[k].tolist()
            steps[st + 1: min(e, T)] = 1
            steps[st] = 2 + p
        steps[~covered] = -1  # free: generated where in the region
        self.known["melody"] = steps.to(self.device).expand(self.num_samples, T).clone()
        self.given_melody_notes, self.given_melody_steps = notes, covered
        cfg = self.config
        laid = notes[(notes[:, 0] >= cfg.pitch_low) & (notes[:, 0] <= cfg.pitch_high)]
        length = np.minimum(laid[:, 2], T) - laid[:, 1]  # steps each note sounds in the piece
        k = np.repeat(np.arange(len(laid)), length)  # the note of every sounding cell, in note order
        step = laid[k, 1] + np.arange(len(k)) - np.repeat(np.cumsum(length) - length, length)
        q = laid[k, 0] - cfg.pitch_low
        _, first = np.unique(step * 128 + q, return_index=True)  # a cell two notes share: the earlier's
        first = np.sort(first)
        k, step, q = k[first], step[first], q[first]
        stop = laid[:, 1] + length
        ends = stop < T
        N, K, E = self.num_samples, len(k), int(ends.sum())

        def cells(*arrays, count):  # (count,) arrays -> the same for every sample, as tensors
            n = torch.arange(N, device=self.device).repeat_interleave(count)
            return (n, *(torch.as_tensor(a, device=self.device).repeat(N) for a in arrays))

        n, t, qq, onset, velocity = cells(step, q, step == laid[k, 1], laid[k, 3], count=K)
        self.lay_melody(n, t, qq, onset, velocity,
                        cells(stop[ends], laid[ends, 0] - cfg.pitch_low, count=E))

    def lay_melody(self, n, t, q, onset, velocity, after):
        """Put melody cells into the note level's known roll as fixed cells: the note level then
        writes the accompaniment around them. n, t, q (K,): sample, step, roll pitch of every
        sounding cell (no cell twice); onset (K,) bool: the cells that start a note; velocity
        (K,) theirs; after: (n, t, q) of the step after each note's last, which is fixed silent
        so that nothing holds the note on (another note may start there). Cells already fixed
        (the prompt's, outside the region) stay as they are."""
        known = self.known
        free = ~known["fixed"][n, t, q] & self.region[t]
        n, t, q, onset, velocity = n[free], t[free], q[free], onset[free], velocity[free]
        known["states"][n, t, q] = torch.where(onset, 1, HELD)
        known["velocity"][n, t, q] = torch.where(onset, velocity, 0)
        known["fixed"][n, t, q] = True
        if self.melody_top is None:
            self.melody_top = torch.full(known["fixed"].shape[:2], -1, dtype=torch.long, device=known["fixed"].device)
        T = self.melody_top.shape[1]
        self.melody_top.view(-1).scatter_reduce_(0, n * T + t, q.long(), reduce="amax")  # its highest cell per step
        n, t, q = after
        free = ~known["fixed"][n, t, q]
        n, t, q = n[free], t[free], q[free]
        known["states"][n, t, q] = 0
        known["fixed"][n, t, q] = True

    def ties(self, level, editable):
        """(N, L) the token each of the level's tokens copies (itself where none, and wherever
        either end is not generated), from the bars' repeat sources, and for a level that
        repeats bars (`Level.repeats_bars`: the rhythm) with `rhythm_repeat`, from the bar
        before in the phrase (`bar_repeats`); None without either."""
        B = self.num_bars
        own_bars = torch.arange(B, device=self.device)
        src_bar = own_bars if self.bar_source is None else self.bar_source.to(self.device)
        src_bar = src_bar.expand(editable.shape[0], B)  # (N, B)
        repeats = getattr(level, "repeats_bars", False) and self.rhythm_repeat > 0
        if not repeats and self.bar_source is None:
            return None
        if repeats:  # a repeat of the form takes its source bar first (it copies its first phrase
            # exactly), then every bar the root of its repeats in the phrase
            form, within = src_bar, self.bar_repeats()  # both (N, B), pointing to the bar itself or an earlier one
            src_bar = own_bars.expand_as(form)
            while True:  # at most B rounds
                nxt = within.gather(1, form.gather(1, src_bar))
                if torch.equal(nxt, src_bar):
                    break
                src_bar = nxt
        N, L = editable.shape
        if level.name == "structure":  # tempo classes, then density classes, one per bar
            index = torch.cat([src_bar, src_bar + B], dim=1)
        else:
            stride = level.stride
            starts = self.bar_starts.to(self.device)
            bar_index, position = self.grid.bar_index[0], self.grid.bar_position[0]
            src_step = starts[src_bar[:, bar_index]] + position  # (N, T)
            first = torch.arange(0, src_step.shape[1], stride, device=self.device)[:L]
            s = src_step[:, first]
            index = torch.where(s % stride == 0, s // stride, torch.arange(L, device=self.device))
        own = torch.arange(L, device=self.device).expand(N, L)
        return torch.where(editable & editable.gather(1, index), index, own)

    def bar_repeats(self):
        """(N, B) per piece, the bar whose rhythm each bar repeats (itself where none): a bar
        repeats the bar before it with probability `rhythm_repeat` when both lie in one phrase
        of the form (without a form, in one group of four bars from the first) and have the
        same length, and neither has a density given by the caller or both have the same
        density class (what the caller gives wins, as over the form's repeats); it then takes
        that bar's own source, so a run of repeats holds one figure. Pop accompaniment keeps its
        figure from bar to bar (groove consistency 0.86 in the POP909 songs); the rhythm level,
        sampling a phrase's bars in parallel, varies it more (0.80): see README, "The songs
        model"."""
        B, N = self.num_bars, self.num_samples
        starts = self.bar_starts
        lengths = (starts[1:] - starts[:-1]).tolist()
        first = (self.phrase_start.tolist() if self.phrase_start is not None
                 else [b % 4 == 0 for b in range(B)])
        given = self._given_density_classes()  # what the caller gives wins: its densities must agree
        draw = torch.rand((N, B), generator=self.generator)
        src = torch.arange(B).repeat(N, 1)
        for b in range(1, B):
            if not first[b] and lengths[b] == lengths[b - 1] and given[b] == given[b - 1] != "bad":
                src[:, b] = torch.where(draw[:, b] < self.rhythm_repeat, src[:, b - 1], src[:, b])
        return src.to(self.device)

    def _bars(self, num_bars, time_signatures, prompt, inpaint_bars):
        """Time signature and length of every bar, bar starts, and which bars to generate.
        `time_signatures`: one (numerator, denominator) per bar, or a single one for every bar
        after the prompt (default 4/4, or the prompt's last when continuing)."""
        cfg = self.config
        if prompt is not None and prompt.steps_per_beat != cfg.steps_per_beat:
            raise ValueError(f"the prompt has {prompt.steps_per_beat} steps per beat, the model {cfg.steps_per_beat}")
        single = time_signatures is not None and len(time_signatures) == 2 and not hasattr(time_signatures[0], "__len__")
        if time_signatures is not None and not single:
            sigs = [tuple(int(v) for v in s) for s in time_signatures]
            if num_bars is not None and num_bars != len(sigs):
                raise ValueError(f"num_bars = {num_bars} but {len(sigs)} time signatures (one per bar)")
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
            tail = time_signatures if single else (head[-1] if head else (4, 4))
            sigs = head + [tuple(int(v) for v in tail)] * (num_bars - pb)
        if len(sigs) > cfg.max_bars:
            raise ValueError(f"{len(sigs)} bars is more than this model's max_bars = {cfg.max_bars}")
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
        return {"states": states.expand(N, T, P).clone(), "velocity": velocity.expand(N, T, P).clone(),
                "fixed": fixed.expand(N, T, P).clone()}

    # ---------------------------------------------------------------- network passes
    def count_pass(self, fn, *args, **kwargs):
        """A sequential network pass (a batched cond + uncond pass is one)."""
        self.passes += 1
        return fn(*args, **kwargs)

    def modulations(self, level, parent, both):
        """The level's adaLN parameters for its condition (and, with `both`, the null condition
        stacked under it): they do not change between iterations, so computed once per call."""
        key, N = (level.name, both), parent.shape[0]
        if key not in self.conditions:
            if not both and (level.name, True) in self.conditions:  # the conditioned half of a guided batch
                self.conditions[key] = [m[:N] for m in self.conditions[(level.name, True)]]
            else:
                drop = torch.zeros(N, dtype=torch.bool, device=parent.device)
                self.conditions[key] = _condition_runs(
                    level, torch.cat([parent, parent]) if both else parent, torch.cat([drop, ~drop]) if both else drop)
        return self.conditions[key]

    def guided_pass(self, level, inputs, *tokens, want_uncond=False, **kwargs):
        """One pass of a content level on `tokens` (its tokens and mask), with classifier-free
        guidance: cond and uncond batched together (one sequential pass) when the guidance scale
        is not 1 or `want_uncond`. Returns (cond outputs, uncond outputs or None)."""
        both = self.guidance_scale != 1.0 or want_uncond
        twice = (lambda a: torch.cat([a, a])) if both else (lambda a: a)
        mods = self.modulations(level, inputs["parent"], both)
        kwargs = {k: twice(v) if torch.is_tensor(v) else v for k, v in kwargs.items()}
        out = self.count_pass(level, *map(twice, tokens), twice(inputs["position"]), None, None,
                              twice(inputs["valid"]), modulations=mods, **kwargs)
        if not both:
            return out, None
        N = tokens[0].shape[0]
        return tuple(o if o is None else o[:N] for o in out), tuple(o if o is None else o[N:] for o in out)

    def condition_below(self, level, tokens, inputs):
        """The level's state on its decoded tokens, the condition of the levels below (one pass)."""
        mods = self.modulations(level, inputs["parent"], False) if level.guided else None
        h = self.count_pass(level.state, tokens, inputs, mods)
        self.step(level.name)
        return h

    # ---------------------------------------------------------------- records and the result
    def step(self, level, iteration=None, tokens=None):
        """A pass is done: record the level's tokens (when asked for) and report progress."""
        record = None
        if tokens is not None and self.intermediates is not None:
            record = {"level": level, "iteration": iteration, "tokens": tokens.to("cpu", copy=True)}
            self.intermediates.append(record)
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
        if self.callback is not None:
            self.callback(level, self.done, self.total, record)

    def result(self) -> FractalMIDIGeneration:
        if self.bar is not None:
            self.bar.close()
        cfg, prompt = self.config, self.prompt
        return FractalMIDIGeneration(
            **self.outputs, time_signatures=self.time_signatures, steps_per_beat=cfg.steps_per_beat,
            pitch_low=cfg.pitch_low, pitch_high=cfg.pitch_high, num_forward_passes=self.passes,
            intermediates=self.intermediates, prompt=prompt, tempo_map=self.tempo_map,
            region=self.region.cpu() if prompt is not None else None, form=self.form_name, key=self.key_name,
            given_melody=getattr(self, "given_melody_notes", None),
            given_melody_steps=getattr(self, "given_melody_steps", None),
        )


class FractalMIDIGenerationMixin:
    """`generate` for `FractalMIDIModel` (kept apart from the network, as diffusers keeps its
    pipelines apart from its models), and the loading of its `generation_config`."""

    @torch.inference_mode()
    def generate(
        self,
        num_bars: int | None = None,
        *,
        time_signatures=None,
        structure: dict | None = None,
        prompt=None,
        inpaint_bars=None,
        chords=None,
        form=None,
        key=None,
        melody=None,
        melody_bars=None,
        num_samples: int = 1,
        seed: int | None = None,
        generation_config: GenerationConfig | None = None,
        return_intermediates: bool = False,
        return_influence: bool = False,
        progress=None,
        **kwargs,
    ) -> FractalMIDIGeneration:
        """Generate piano music, level by level: structure, then harmony (and melody), then notes.

        Args:
            num_bars: bars to generate (with a prompt: the total, prompt bars included).
            time_signatures: one (numerator, denominator) per bar (then num_bars may be left
                out), or a single one for every generated bar after the prompt (default 4/4, or
                the prompt's last bar when continuing).
            structure: {"density": per-bar onsets per step, "tempo": per-bar BPM}, either or
                both, one value per bar (None entries are generated): kept, not regenerated.
            prompt: a `fractalmidi.Piece` to inpaint or continue.
            inpaint_bars: bar ranges to regenerate, 0-based half-open [(first, stop), ...];
                default with a prompt: the bars after it (continuation).
            chords: per bar (one entry per bar of the piece) None (generated) or a list of 1+
                (root, quality, bass) as `fractalmidi.controls.chords` gives, splitting the
                bar's beats evenly (earlier chords take the remainder): kept, not regenerated.
                Needs a model with a chord level.
            form: the song's form, a string of phrases like "i4A8B8A8B8o4" (letter + bars;
                upper case melodic, the same letter the same material; `structure.parse_form`)
                covering exactly the piece's bars (num_bars may then be left out). Its bars
                feed the structure level (a model with `form_inputs`), and bars of a later
                phrase of a letter repeat the bars of its first phrase (with `follow_form`: the
                levels' iterations copy them, the refinement rounds vary them). None: drawn from
                the model's training forms (`generation_config.form_prior`) where it has them.
            key: "G:maj", "Eb:min" (`controls.key`) or (tonic 0-11, "maj" / "min"); None: drawn
                for a model with `form_inputs`. Written as the MIDI key signature.
            melody: notes (K, 4) (pitch, start step, end step, velocity) on the piece's grid
                to keep note for note (arrangement): the melody level keeps them as its tokens,
                the note level writes the accompaniment around them. Needs a melody level.
            melody_bars: the bars `melody` covers, ranges [(first, stop), ...] 0-based half-open
                (default: every bar): elsewhere the melody is generated (in the region), e.g.
                the prompt's bars when continuing a song.
            num_samples: pieces generated at once (a batch).
            seed: the same seed gives the same piece (the only source of randomness; None: a
                random seed).
            generation_config: a `GenerationConfig` whose fields (those set to other than
                transformers' defaults) replace the model's `generation_config`'s.
            return_intermediates: keep each level after each iteration (for a visualiser).
            return_influence: run the unconditional pass at the last note iteration even when
                guidance_scale == 1, to report where the condition changes the prediction.
            progress: None, True (a tqdm bar) or a callable `(level, done, total, record)`
                called after every pass (`record`: the intermediate just recorded, or None).
            **kwargs: the generation config's decoding fields, for this call:
                temperature (> 0; scales every level's logits; default 0.8), top_p (nucleus
                sampling of the token levels' classes and of velocities, not of note states:
                a cell's three states are no vocabulary, and a per-cell nucleus would drop
                every rare onset; 1 = off; default 0.9), guidance_scale (classifier-free guidance of the content levels: logits =
                uncond + scale * (cond - uncond); 1 = none), num_iterations (per level),
                refine_ratio and refine_rounds (the refinement after each content level),
                follow_structure (the note level follows Level 0's density as a plan: each
                bar's onset logits get one shared offset so that its expected onset count is
                what its density asks for; False: through the conditioning alone),
                follow_form (repeats of the form copy their first occurrence, except bars whose
                given chords or density differ from their source's; False: the form only
                conditions), variation (0-1, default 0.25: the share of a repeat's tokens
                each refinement round re-samples on its own; the rest follow the first
                occurrence, which the round also refines), temperature_scale (one factor per
                level, each 0.25-4: a level samples at temperature x its factor; None: 1 for all),
                chord_gain (0-8, default 2.5: where the caller gives chords, the note level's onset
                logits get +chord_gain on the chords' tones and -chord_gain on the other pitch
                classes, so the given chords are heard; 0: through the conditioning alone),
                melody_gain (0-8, default 0; the songs model's generation config sets 2: where a
                melody is laid into the roll, by the melody level or the caller, accompaniment
                onsets above its pitch get -melody_gain, so the melody stays the top voice),
                sustain (-4-4, default 0; the songs model's generation config sets it: a logit
                offset of the "held" state where the note level decides whether a sounding note
                goes on, so notes last longer (> 0) or shorter (< 0); the onsets are unchanged),
                rhythm_repeat (0-1, default 0; the songs model's generation config sets it: the
                chance that a bar's rhythm, its onsets per step, repeats the bar before it in
                its phrase; `GenerationRun.bar_repeats`), rhythm_prior (0-2, default 0; the songs
                model's generation config sets 1: the strength of the bar-pattern prior of a model
                whose generation config holds `rhythm_patterns` (`sampling.fit_bar_patterns`,
                `scripts/fit_rhythm_patterns.py`): each 4/4 bar's onsets go together as in the
                training songs, a run of sixteenths or none; 0 = off).
        Returns:
            a `FractalMIDIGeneration` (`.to_piece()`, `.to_midi(path)`, `.num_forward_passes`).
        """
        run = GenerationRun(self, generation_config, kwargs, seed, num_samples, progress,
                            return_intermediates, return_influence)
        if num_bars is None and form is not None and prompt is None and (
                time_signatures is None or not hasattr(time_signatures[0], "__len__")):
            from .form_fractalmidi import parse_form

            num_bars = sum(p.bars for p in (form if isinstance(form, (list, tuple)) else parse_form(form)))
        run.plan(num_bars, time_signatures, structure, prompt, inpaint_bars)
        run.given_chords(chords)
        run.given_melody(melody, melody_bars)
        run.given_form(form, key)
        above = []  # (level, state) of the levels decoded so far: the condition of the next
        for level in self.levels:
            tokens, inputs = decode_level(level, run, above)
            if level is not self.levels[-1] and level.feeds_below:
                above.append((level, run.condition_below(level, tokens, inputs)))
        return run.result()

    def adjust_generation_fn(self, generation_config, from_auto_class, from_pipeline, pretrained_model_name_or_path,
                             **kwargs):
        """`from_pretrained`'s hook: the decoding defaults from the checkpoint's
        `generation_config.json` (or the `generation_config` given), the fields it lacks from
        the model config."""
        if generation_config is not None:
            saved = generation_config.to_dict()
        else:
            keys = ("cache_dir", "force_download", "proxies", "local_files_only", "token", "revision", "subfolder")
            path = cached_file(pretrained_model_name_or_path, "generation_config.json",
                               _raise_exceptions_for_missing_entries=False, **{k: kwargs[k] for k in keys if k in kwargs})
            saved = {}
            if path is not None:
                with open(path, encoding="utf-8") as f:
                    saved = json.load(f)
        self.generation_config = default_generation_config(self.config, **saved)
