"""The README's Python example runs as written, and prints what its comments say.

Each ```python block of README.md is executed with the repository's top-level folders
visible from a temporary working folder (symbolic links), so its relative paths
(`checkpoints/...`, `tests/data/...`) resolve as from the repository root while whatever it
writes (`outputs/out.mid`) lands in the temporary folder, never in the repository. A line
`print(...)  # text` must print exactly `text`.
"""

import re
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
WRITTEN = {"outputs"}  # folders the examples write into: made fresh, not linked to the repo


def python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", README.read_text(encoding="utf-8"), re.S | re.M)


def expected_prints(code: str) -> list[str]:
    """The text after `#` on each line that starts with print(, in order."""
    return [m.group(1).strip() for m in re.finditer(r"^print\(.*\)\s+#\s*(.*)$", code, re.M)]


@pytest.fixture
def repo_view(tmp_path, monkeypatch) -> Path:
    """A working folder in which the repository's top-level folders appear (linked)."""
    for entry in ROOT.iterdir():
        if entry.is_dir() and not entry.name.startswith(".") and entry.name not in WRITTEN:
            (tmp_path / entry.name).symlink_to(entry, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_readme_has_the_python_example():
    blocks = python_blocks()
    assert len(blocks) == 1 and "read_midi(" in blocks[0]
    assert expected_prints(blocks[0]), "the example should show what it prints"


def test_readme_python_example_runs_and_prints_what_it_says(repo_view, capsys):
    code = python_blocks()[0]
    namespace: dict = {"__name__": "__readme__"}
    exec(compile(code, str(README), "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    assert printed == expected_prints(code)

    # issue 10: read_midi used no beat file by default, so song 001 came out as 146 bars of 2/4
    # and the example's bar numbers for inpainting and cropping meant other music
    from fractalmidi import read_midi

    song = namespace["song"]
    assert song.num_bars == 73 and np.all(song.time_signatures == [4, 4])
    ticks, _ = read_midi(ROOT / "tests/data/pop909/001/001.mid", beats=None)
    assert ticks.num_bars == 146 and np.all(ticks.time_signatures == [2, 4])  # as the README says
    opening = namespace["opening"]
    assert opening.num_bars == 16 and opening.num_steps == 16 * 16
    # inpainting kept every note that starts outside bars 9-12 (0-based 8..11)
    lo, hi = opening.bar_starts[8], opening.bar_starts[12]
    outside = lambda p: {tuple(n) for n in p.notes.tolist() if not lo <= n[1] < hi}
    assert outside(namespace["inpainted"].to_piece()) == outside(opening)

    # what it wrote went to the temporary folder
    out = repo_view / "outputs" / "out.mid"
    assert read_midi(out, beats=None)[0].num_bars == 16


def quick_start_command() -> str:
    """The main job of the quick start after its set-up part: what a newcomer runs once the
    virtual environment is ready (`... pip install --no-deps -e . && <this>`)."""
    block = re.findall(r"^```bash\n(.*?)^```$", README.read_text(encoding="utf-8"), re.S | re.M)[0]
    line = next(l for l in block.splitlines() if "fractalmidi generate" in l)
    setup, _, command = line.partition("pip install --no-deps -e . && ")
    assert setup.startswith("python3 -m venv .venv") and command, line
    return command


def test_readme_quick_start_generates_the_song_it_promises(repo_view):
    """The quick start's own command, run as written in a fresh folder (the set-up before it
    is what CI itself does): it writes outputs/song.mid and its picture, with 16 bars."""
    import os
    import shutil
    import subprocess
    import sys

    command = quick_start_command()
    assert "--out outputs/song.mid" in command
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    assert shutil.which("fractalmidi", path=env["PATH"]), "the console script is installed with the package"
    run = subprocess.run(["bash", "-c", command], cwd=repo_view, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "pitch_entropy" in run.stdout  # --evaluate
    from fractalmidi import read_midi

    song, _ = read_midi(repo_view / "outputs" / "song.mid")
    assert song.num_bars == 16
    assert (repo_view / "outputs" / "song.png").read_bytes()[:4] == b"\x89PNG"
