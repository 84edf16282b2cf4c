"""FractalMIDI: hierarchical piano music generation, structure first, then notes.

The grid, MIDI reading and writing, and metrics are importable without torch:

    from fractalmidi import Piece, read_midi, write_midi
"""

from .errors import InputError
from .midi_io import ReadReport, read_beats, read_midi, read_midi_tracks, write_midi
from .piece import PIANO_RANGE, Piece, bar_length_steps, normalize_notes, roll_to_notes

__version__ = "0.1.0"

__all__ = [
    "InputError",
    "PIANO_RANGE",
    "Piece",
    "ReadReport",
    "bar_length_steps",
    "normalize_notes",
    "read_beats",
    "read_midi",
    "read_midi_tracks",
    "roll_to_notes",
    "write_midi",
]
