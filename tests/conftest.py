"""Shared test fixtures: the POP909 sample in tests/data (see tests/data/README.md)."""

from pathlib import Path

import pytest

DATA_DIR = Path(__file__).resolve().parent / "data"
POP909_DIR = DATA_DIR / "pop909"


def pop909_songs() -> list[Path]:
    """Song folders of the sample that hold both NNN.mid and beat_midi.txt."""
    if not POP909_DIR.is_dir():
        return []
    return sorted(
        d for d in POP909_DIR.iterdir()
        if (d / f"{d.name}.mid").is_file() and (d / "beat_midi.txt").is_file()
    )


@pytest.fixture
def pop909_dir() -> Path:
    return POP909_DIR


def pytest_generate_tests(metafunc):
    # `pop909_song`: one test per song folder (a Path), id = the song number
    if "pop909_song" in metafunc.fixturenames:
        songs = pop909_songs()
        metafunc.parametrize("pop909_song", songs, ids=[d.name for d in songs])
