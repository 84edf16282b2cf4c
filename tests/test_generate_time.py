"""benchmarks/generate_time.py: the per-level timing table (its figures are not asserted)."""

import pytest

from benchmarks import generate_time


def test_generate_time_prints_runs_median_passes_and_every_level(songs_model_dir, capsys):
    generate_time.main(["--model", str(songs_model_dir), "--bars", "2", "--repeats", "2", "--threads", "1"])
    out = capsys.readouterr().out
    head, rule, row = out.strip().splitlines()[-3:]
    assert "32 steps" in out and "passes" in out
    assert head.split("|")[3:-1] == [" structure ", " chords ", " harmony ", " melody ", " rhythm ", " notes "]
    cells = row.split("|")[1:-1]
    assert len(cells[0].split(" / ")) == 2 and all(float(c) >= 0 for c in cells[1:])


def test_generate_time_bounds_its_arguments(songs_model_dir):
    with pytest.raises(SystemExit):
        generate_time.main(["--model", str(songs_model_dir), "--bars", "5000"])
