"""FractalMIDI: hierarchical piano music generation, structure first, then notes.

    from fractalmidi import FractalMIDIModel, Piece, read_midi
    model = FractalMIDIModel.from_pretrained("checkpoints/fractalmidi-pop909-songs")
    model.generate(num_bars=16, seed=0).to_midi("out.mid")

The grid, MIDI reading and writing, and metrics import without torch; the model classes are
loaded on first use. After `import fractalmidi`, `AutoConfig` / `AutoModel.from_pretrained`
load FractalMIDI folders (`model_type: "fractalmidi"`) with this package's classes: they are
registered when transformers' auto classes are imported (a post-import hook, so that importing
this package does not import torch; see `fractalmidi.hub`).
"""

from . import hub as _hub
from .errors import InputError
from .midi_io import ReadReport, read_beats, read_midi, read_midi_tracks, resolve_beats, write_midi
from .piece import PIANO_RANGE, Piece, bar_length_steps, normalize_notes, roll_to_notes

__version__ = "0.1.0"

_MODEL_NAMES = ("FractalMIDIConfig", "FractalMIDIModel", "FractalMIDIGeneration", "FractalMIDIOutput")


def __getattr__(name):
    """The torch / transformers side, imported on first use."""
    if name not in _MODEL_NAMES:
        raise AttributeError(f"module 'fractalmidi' has no attribute {name!r}")
    from .configuration_fractalmidi import FractalMIDIConfig
    from .generation_fractalmidi import FractalMIDIGeneration
    from .modeling_fractalmidi import FractalMIDIModel, FractalMIDIOutput

    _hub.register_auto_classes()
    return locals()[name]


_hub.install_registration_hook()

__all__ = [
    "FractalMIDIConfig",
    "FractalMIDIGeneration",
    "FractalMIDIModel",
    "FractalMIDIOutput",
    "InputError",
    "PIANO_RANGE",
    "Piece",
    "ReadReport",
    "bar_length_steps",
    "normalize_notes",
    "read_beats",
    "read_midi",
    "read_midi_tracks",
    "resolve_beats",
    "roll_to_notes",
    "write_midi",
]
