"""FractalMIDI model configuration.

This file travels with Hub checkpoints for `trust_remote_code`: it imports only transformers
(and the standard library).

The model unfolds a piece in levels, each a bidirectional transformer decoded by iterative
masked prediction and conditioned on the levels above:

    structure  one token per bar: tempo bin and density bin (what Level 0 generates)
    chords     one token per beat: no chord (N) or root x quality (12 x 14; the bass is the
               root); optional, right after structure
    harmony    one token per `harmony_patch_steps` steps: the 12 pitch classes sounding there
               (the seed's "harmonic compression"; optional: leave it out of `levels`)
    melody     one token per step: the monophonic melody (rest, hold, or the onset of one pitch
               of `melody_pitch_low`-`melody_pitch_high`); optional, between harmony and notes
    notes      one token per step: for every pitch of the range silent / onset / held, and a
               velocity bin on onsets; a pitch-sweep convolution (kernel of an octave along
               the pitch axis) reads the roll, attention stays inside windows of
               `note_window` steps (shifted by half a window every other layer), so cost
               grows as O(L) with the length L
"""

from __future__ import annotations

import math

from transformers import PreTrainedConfig

LEVELS = ("structure", "chords", "harmony", "melody", "rhythm", "notes")  # their order, top down
# decoding iterations of each level when `num_iterations` is not given
DEFAULT_ITERATIONS = {"structure": 8, "chords": 8, "harmony": 8, "melody": 8, "rhythm": 4, "notes": 3}
NUM_CHORD_QUALITIES = 14  # len(fractalmidi.structure.QUALITIES)
MASK_SCHEDULES = ("cosine", "linear", "square", "cubic")
REMASK_MODES = ("confidence", "random")


class FractalMIDIConfig(PreTrainedConfig):
    r"""Configuration of a [`FractalMIDIModel`].

    Args:
        steps_per_beat (`int`, *optional*, defaults to 4):
            Grid steps per quarter note (4 = 16th notes). A bar of n/d has n*4/d quarter notes.
        max_bar_len (`int`, *optional*, defaults to 48):
            Longest bar in steps (48 = 12/4 at 16ths); sizes the bar-position embeddings, so
            3/4, 6/8 and 7/8 bars are as native as 4/4. Longer bars are refused.
        pitch_low (`int`, *optional*, defaults to 21):
            Lowest MIDI pitch of the roll (21 = A0).
        pitch_high (`int`, *optional*, defaults to 108):
            Highest MIDI pitch of the roll (108 = C8): 88 keys by default.
        max_bars (`int`, *optional*, defaults to 1024):
            Most bars a piece may have (the structure level's length limit).
        levels (`list[str]`, *optional*, defaults to `["structure", "harmony", "notes"]`):
            The levels, top down. "structure" comes first and "notes" last; "chords", "harmony"
            and "melody" are optional and come in that order between them.
        tempo_bins (`int`, *optional*, defaults to 48):
            Number of tempo classes, spaced evenly in log-tempo between `tempo_min` and `tempo_max`.
        tempo_min (`float`, *optional*, defaults to 30.0):
            Lowest tempo class centre, BPM (quarter notes per minute). Slower tempi are clipped.
        tempo_max (`float`, *optional*, defaults to 240.0):
            Highest tempo class centre, BPM. Faster tempi are clipped.
        density_bins (`int`, *optional*, defaults to 32):
            Number of density classes, spaced evenly from 0 to `density_max`.
        density_max (`float`, *optional*, defaults to 4.0):
            Highest density class, in onsets per step (a bar's onsets / its steps).
        velocity_bins (`int`, *optional*, defaults to 16):
            Number of velocity classes over 1-127.
        structure_hidden_size (`int`, *optional*, defaults to 256):
            Width of the structure level.
        structure_num_layers (`int`, *optional*, defaults to 4):
            Transformer blocks of the structure level.
        structure_num_heads (`int`, *optional*, defaults to 4):
            Attention heads of the structure level (full attention over the bars).
        harmony_patch_steps (`int`, *optional*, defaults to 4):
            Steps per harmony token (4 = one quarter note at 16ths).
        harmony_hidden_size (`int`, *optional*, defaults to 192):
            Width of the harmony level.
        harmony_num_layers (`int`, *optional*, defaults to 4):
            Transformer blocks of the harmony level.
        harmony_num_heads (`int`, *optional*, defaults to 4):
            Attention heads of the harmony level.
        harmony_window (`int`, *optional*, defaults to 64):
            Harmony tokens per attention window (64 quarter notes = 16 bars of 4/4); 0 = full attention.
        chord_hidden_size (`int`, *optional*, defaults to 128):
            Width of the chord level (only used when "chords" is in `levels`).
        chord_num_layers (`int`, *optional*, defaults to 4):
            Transformer blocks of the chord level.
        chord_num_heads (`int`, *optional*, defaults to 4):
            Attention heads of the chord level.
        chord_window (`int`, *optional*, defaults to 64):
            Beats per attention window of the chord level (64 = 16 bars of 4/4); 0 = full attention.
        melody_hidden_size (`int`, *optional*, defaults to 128):
            Width of the melody level (only used when "melody" is in `levels`).
        melody_num_layers (`int`, *optional*, defaults to 4):
            Transformer blocks of the melody level.
        melody_num_heads (`int`, *optional*, defaults to 4):
            Attention heads of the melody level.
        melody_window (`int`, *optional*, defaults to 64):
            Steps per attention window of the melody level (64 = 4 bars of 4/4); 0 = full attention.
        rhythm_hidden_size (`int`, *optional*, defaults to 96):
            Width of the rhythm level (only used when "rhythm" is in `levels`): one token per
            step, how many notes start there (0 .. `rhythm_max_count`, the last "that many or
            more"), melody included. It does not condition the note level; the note level starts
            exactly that many notes at each step, choosing their pitches itself.
        rhythm_num_layers (`int`, *optional*, defaults to 3):
            Transformer blocks of the rhythm level.
        rhythm_num_heads (`int`, *optional*, defaults to 4):
            Attention heads of the rhythm level.
        rhythm_window (`int`, *optional*, defaults to 64):
            Steps per attention window of the rhythm level (64 = 4 bars of 4/4); 0 = full attention.
        rhythm_max_count (`int`, *optional*, defaults to 7):
            The largest onset count of a rhythm token (1-88).
        melody_pitch_low (`int`, *optional*, defaults to 48):
            Lowest melody pitch (MIDI) with its own onset token; lower melody notes are moved
            up by octaves into the range.
        melody_pitch_high (`int`, *optional*, defaults to 96):
            Highest melody pitch (MIDI); higher notes are moved down by octaves.
        note_hidden_size (`int`, *optional*, defaults to 128):
            Width of the note level.
        note_num_layers (`int`, *optional*, defaults to 4):
            Transformer blocks of the note level.
        note_num_heads (`int`, *optional*, defaults to 4):
            Attention heads of the note level.
        note_window (`int`, *optional*, defaults to 32):
            Steps per attention window of the note level (32 = 2 bars of 4/4); 0 = full attention.
        pitch_kernel (`int`, *optional*, defaults to 12):
            Width along the pitch axis of the pitch-sweep convolution (12 semitones = an octave).
        pitch_channels (`int`, *optional*, defaults to 8):
            Output channels of the pitch-sweep convolution.
        note_local_kernel (`int`, *optional*, defaults to 5):
            Steps (odd) seen by the note level's local head: per pitch, a linear map of the
            neighbouring steps' input channels added to that pitch's state logits, so that a
            known sounding cell before a masked one makes "held" likely (the step tokens alone,
            88 pitches folded into `note_hidden_size`, carried that too coarsely: the model
            said p(held) = 0.24 where 0.70 was true); 0 = no local head.
        mlp_ratio (`int`, *optional*, defaults to 4):
            Feed-forward width as a multiple of the level's width.
        dropout (`float`, *optional*, defaults to 0.0):
            Dropout on residual branches during training.
        attention_dropout (`float`, *optional*, defaults to 0.0):
            Dropout on attention probabilities during training.
        rms_norm_eps (`float`, *optional*, defaults to 1e-6):
            Epsilon of the RMS norms.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal initialisation of linear and embedding weights.
        num_iterations (`list[int]`, *optional*):
            Masked-decoding iterations per level, in the order of `levels` (default for `generate`).
            Not given: derived per level (structure 8, chords 8, harmony 8, melody 8, notes 3;
            `[8, 8, 3]` for the default levels).
            The harmony level needs 8: with 4, its pitch classes drift out of key (scale
            consistency 0.88 against 0.96 with 8 on the POP909 model; see README).
        mask_schedule (`str`, *optional*, defaults to `"cosine"`):
            Fraction still masked after each iteration: "cosine" (MaskGIT), "linear", "square", "cubic".
        remask_mode (`str`, *optional*, defaults to `"confidence"`):
            Which tokens stay masked: the least "confidence"-nt ones (MaskGIT) or "random" (MAR).
        token_remask_mode (`str`, *optional*, defaults to `"random"`):
            The same for the chord and melody levels. Their frequent classes (the tonic chord, a
            rest, a hold) win every confidence ranking, so confidence order collapses them: a
            whole song on one chord with five melody notes (measured); random order does not.
        refine_ratio (`float`, *optional*, defaults to 0.3):
            Fraction of a content level re-masked and predicted again in each refinement round.
        refine_rounds (`int`, *optional*, defaults to 1):
            Refinement ("deep sampling") rounds after each content level.
        cond_drop_prob (`float`, *optional*, defaults to 0.1):
            Training: probability that an example's condition from the levels above is replaced
            by a learned null condition, which makes classifier-free guidance possible.
        structure_weight (`float`, *optional*, defaults to 1.0):
            Weight of the structure loss in the total loss (the trainer ramps it from 0).
        default_temperature (`float`, *optional*, defaults to 0.8):
            The sampling temperature `generate` uses when none is given (with `default_top_p`,
            what brought the POP909 model's statistics closest to the validation songs; see README).
        default_top_p (`float`, *optional*, defaults to 0.9):
            The nucleus `generate` samples from when none is given (1 = the whole distribution);
            0.9 keeps rare spurious onsets out and made the grooves more regular.
        form_inputs (`bool`, *optional*, defaults to False):
            The structure level also reads each bar's place in the song's form (phrase kind,
            position in the phrase, bars left in it, first or later occurrence of its letter;
            `structure.form_features`), the song's key and the bar's time signature itself
            (numerator and denominator, so 3/4 and 6/8 differ), each unknown where not given.
            Its state carries them to every level below.
        form_drop_prob (`float`, *optional*, defaults to 0.15):
            Training (with `form_inputs`): probability that an example's form and key are
            hidden (read as unknown), so the model also writes songs without them.
    """

    model_type = "fractalmidi"

    # the grid
    steps_per_beat: int = 4
    max_bar_len: int = 48
    pitch_low: int = 21
    pitch_high: int = 108
    max_bars: int = 1024
    # the levels and their vocabularies
    levels: list[str] | tuple[str, ...] = ("structure", "harmony", "notes")
    tempo_bins: int = 48
    tempo_min: float = 30.0
    tempo_max: float = 240.0
    density_bins: int = 32
    density_max: float = 4.0
    velocity_bins: int = 16
    # sizes
    structure_hidden_size: int = 256
    structure_num_layers: int = 4
    structure_num_heads: int = 4
    harmony_patch_steps: int = 4
    harmony_hidden_size: int = 192
    harmony_num_layers: int = 4
    harmony_num_heads: int = 4
    harmony_window: int = 64
    chord_hidden_size: int = 128
    chord_num_layers: int = 4
    chord_num_heads: int = 4
    chord_window: int = 64
    melody_hidden_size: int = 128
    melody_num_layers: int = 4
    melody_num_heads: int = 4
    melody_window: int = 64
    melody_pitch_low: int = 48
    melody_pitch_high: int = 96
    rhythm_hidden_size: int = 96
    rhythm_num_layers: int = 3
    rhythm_num_heads: int = 4
    rhythm_window: int = 64
    rhythm_max_count: int = 7
    note_hidden_size: int = 128
    note_num_layers: int = 4
    note_num_heads: int = 4
    note_window: int = 32
    pitch_kernel: int = 12
    pitch_channels: int = 8
    note_local_kernel: int = 5
    mlp_ratio: int = 4
    dropout: float = 0.0
    attention_dropout: float = 0.0
    rms_norm_eps: float = 1e-6
    initializer_range: float = 0.02
    # decoding and training
    num_iterations: list[int] | tuple[int, ...] | None = None
    mask_schedule: str = "cosine"
    remask_mode: str = "confidence"
    token_remask_mode: str = "random"
    refine_ratio: float = 0.3
    refine_rounds: int = 1
    cond_drop_prob: float = 0.1
    structure_weight: float = 1.0
    default_temperature: float = 0.8
    default_top_p: float = 0.9
    # the structure level's bar inputs beside the bar length
    form_inputs: bool = False
    form_drop_prob: float = 0.15

    def __post_init__(self, **kwargs):
        self.levels = list(self.levels)
        if self.num_iterations is None:  # not given: a default per level
            self.num_iterations = [DEFAULT_ITERATIONS.get(lv, 8) for lv in self.levels]
        self.num_iterations = [int(n) for n in self.num_iterations]
        super().__post_init__(**kwargs)
        self._check()

    # ------------------------------------------------------------------ derived sizes
    @property
    def num_pitches(self) -> int:
        return self.pitch_high - self.pitch_low + 1

    @property
    def use_harmony(self) -> bool:
        return "harmony" in self.levels

    @property
    def use_chords(self) -> bool:
        return "chords" in self.levels

    @property
    def chord_vocab_size(self) -> int:
        """Chord tokens: 0 no chord (N), 1 + 14 * root + quality (`structure.QUALITIES`)."""
        return 1 + 12 * NUM_CHORD_QUALITIES

    @property
    def use_melody(self) -> bool:
        return "melody" in self.levels

    @property
    def melody_vocab_size(self) -> int:
        """Melody tokens: 0 rest, 1 hold, 2 + k the onset of pitch `melody_pitch_low + k`."""
        return 2 + self.melody_pitch_high - self.melody_pitch_low + 1

    def iterations_for(self, level: str) -> int:
        """The configured number of decoding iterations of a level."""
        return self.num_iterations[self.levels.index(level)]

    # ------------------------------------------------------------------ validation
    def _check(self):
        def need(ok: bool, message: str):
            if not ok:
                raise ValueError(f"FractalMIDIConfig: {message}")

        def integer(name: str, low: int, high: int | None = None):
            v = getattr(self, name)
            need(isinstance(v, int) and not isinstance(v, bool), f"{name} must be an integer, got {v!r}")
            bound = f"{low}-{high}" if high is not None else f">= {low}"
            need(v >= low and (high is None or v <= high), f"{name} = {v} is outside the allowed range {bound}")

        def number(name: str, low: float, high: float):
            v = getattr(self, name)
            need(isinstance(v, (int, float)) and math.isfinite(v), f"{name} must be a finite number, got {v!r}")
            need(low <= v <= high, f"{name} = {v} is outside the allowed range {low}-{high}")

        integer("steps_per_beat", 1, 96)
        integer("max_bar_len", 1)
        integer("pitch_low", 0, 127)
        integer("pitch_high", self.pitch_low, 127)
        integer("max_bars", 1)
        need(
            self.levels[:1] == ["structure"] and self.levels[-1:] == ["notes"]
            and all(lv in LEVELS for lv in self.levels) and len(set(self.levels)) == len(self.levels)
            and [LEVELS.index(lv) for lv in self.levels] == sorted(LEVELS.index(lv) for lv in self.levels),
            f"levels = {self.levels}: must be ['structure', 'notes'] or ['structure', 'harmony', 'notes'] "
            "(optionally 'chords' right after 'structure', 'melody' and 'rhythm' just before 'notes'; "
            "order: structure, chords, harmony, melody, rhythm, notes)",
        )
        need(
            len(self.num_iterations) == len(self.levels) and all(n >= 1 for n in self.num_iterations),
            f"num_iterations = {self.num_iterations}: one count >= 1 per level {self.levels}",
        )
        integer("tempo_bins", 2)
        number("tempo_min", 1.0, 1000.0)
        number("tempo_max", self.tempo_min, 1000.0)
        need(self.tempo_max > self.tempo_min, f"tempo_max = {self.tempo_max} must exceed tempo_min = {self.tempo_min}")
        integer("density_bins", 2)
        number("density_max", 1e-3, 1e3)
        integer("velocity_bins", 1, 127)
        for level in ("structure", "chord", "harmony", "melody", "rhythm", "note"):
            integer(f"{level}_hidden_size", 8)
            integer(f"{level}_num_layers", 1)
            integer(f"{level}_num_heads", 1)
            width, heads = getattr(self, f"{level}_hidden_size"), getattr(self, f"{level}_num_heads")
            need(width % heads == 0, f"{level}_hidden_size = {width} is not divisible by {level}_num_heads = {heads}")
            need((width // heads) % 2 == 0, f"{level}: head size {width // heads} must be even (rotary positions)")
        integer("harmony_patch_steps", 1)
        integer("harmony_window", 0)
        integer("note_window", 0)
        integer("melody_window", 0)
        integer("chord_window", 0)
        if self.chord_window:
            need(self.chord_window % 2 == 0, f"chord_window = {self.chord_window} must be even")
        if self.melody_window:
            need(self.melody_window % 2 == 0, f"melody_window = {self.melody_window} must be even")
        integer("rhythm_window", 0)
        if self.rhythm_window:
            need(self.rhythm_window % 2 == 0, f"rhythm_window = {self.rhythm_window} must be even")
        integer("rhythm_max_count", 1, 88)
        integer("melody_pitch_low", 0, 127)
        integer("melody_pitch_high", self.melody_pitch_low + 11, 127)  # an octave at least: notes fold into it
        if self.note_window:
            need(self.note_window % 2 == 0, f"note_window = {self.note_window} must be even (windows shift by half)")
        if self.harmony_window:
            need(self.harmony_window % 2 == 0, f"harmony_window = {self.harmony_window} must be even")
        integer("pitch_kernel", 1, self.num_pitches)
        integer("pitch_channels", 1)
        integer("note_local_kernel", 0, 63)
        need(self.note_local_kernel % 2 == 1 or self.note_local_kernel == 0,
             f"note_local_kernel = {self.note_local_kernel}: must be odd (centred on the step), or 0")

        integer("mlp_ratio", 1)
        number("dropout", 0.0, 1.0)
        number("attention_dropout", 0.0, 1.0)
        number("rms_norm_eps", 0.0, 1.0)
        number("initializer_range", 0.0, 10.0)
        need(self.mask_schedule in MASK_SCHEDULES, f"mask_schedule = {self.mask_schedule!r}: allowed {MASK_SCHEDULES}")
        need(self.remask_mode in REMASK_MODES, f"remask_mode = {self.remask_mode!r}: allowed {REMASK_MODES}")
        need(self.token_remask_mode in REMASK_MODES,
             f"token_remask_mode = {self.token_remask_mode!r}: allowed {REMASK_MODES}")
        number("refine_ratio", 0.0, 1.0)
        integer("refine_rounds", 0)
        number("cond_drop_prob", 0.0, 1.0)
        number("structure_weight", 0.0, 1e6)
        number("default_temperature", 1e-3, 100.0)
        number("default_top_p", 1e-6, 1.0)
        need(isinstance(self.form_inputs, bool), f"form_inputs must be true or false, got {self.form_inputs!r}")
        number("form_drop_prob", 0.0, 1.0)


__all__ = ["FractalMIDIConfig"]
