"""Errors that FractalMIDI raises for bad input.

Every message names what was wrong and where (file, bar, line, value, allowed range), so the
command line can print it as one line instead of a traceback.
"""


class InputError(ValueError):
    """Bad user input: a file that is not usable MIDI, a bad beat file, a value out of range."""
