"""Shared test fixtures: the POP909 sample in tests/data (see tests/data/README.md)."""

from pathlib import Path

import pytest

DATA_DIR = Path(__file__).resolve().parent / "data"
SONGS_TINY = Path(__file__).resolve().parents[1] / "hub_configs" / "songs_tiny.json"
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


@pytest.fixture(scope="module")
def songs_model():
    """A tiny untrained model with the song levels (hub_configs/songs_tiny.json), seeded."""
    import torch

    from fractalmidi import FractalMIDIConfig, FractalMIDIModel

    torch.manual_seed(0)
    return FractalMIDIModel(FractalMIDIConfig.from_json_file(SONGS_TINY)).eval()


@pytest.fixture(scope="module")
def songs_model_dir(tmp_path_factory, songs_model):
    """That model saved in a folder (for the command line)."""
    path = tmp_path_factory.mktemp("songs_model")
    songs_model.save_pretrained(path)
    return path
