"""`fractalmidi bench` on tiny models: it runs, its JSON holds every field, passes do not grow."""

import io
import json
import sys
from contextlib import redirect_stderr, redirect_stdout

import pytest

from fractalmidi import bench
from fractalmidi.cli import main

ROW_FIELDS = (
    "steps", "bars", "fractalmidi_seconds", "ar_seconds", "ar_tokens", "speedup", "fractalmidi_passes",
    "ar_passes", "fractalmidi_peak_mb", "ar_peak_mb", "fractalmidi_process_peak_mb", "ar_process_peak_mb",
    "music_seconds", "fractalmidi_music_per_second", "ar_music_per_second",
)


@pytest.fixture(scope="module")
def result():
    """One run of the command of the brief (memory subprocesses included), as JSON."""
    argv = ["bench", "--config", "hub_configs/tiny.json", "--lengths", "64", "128", "--repeats", "1", "--json"]
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(argv)
    assert code == 0, err.getvalue()
    return json.loads(out.getvalue())


def test_json_has_every_field(result):
    assert [r["steps"] for r in result["rows"]] == [64, 128]
    assert [r["bars"] for r in result["rows"]] == [4, 8]
    for row in result["rows"]:
        for field in ROW_FIELDS:
            assert field in row, field
        assert row["fractalmidi_seconds"] > 0 and row["ar_seconds"] > 0
        assert row["speedup"] == pytest.approx(row["ar_seconds"] / row["fractalmidi_seconds"])
        assert row["fractalmidi_peak_mb"] > 0 and row["ar_peak_mb"] > 0
        if sys.platform.startswith("linux"):
            assert row["fractalmidi_peak_exact"] and row["ar_peak_exact"]
    for key in ("machine", "fractalmidi", "ar", "tokens_per_bar", "memory_method", "command", "notes"):
        assert key in result
    assert not result["fractalmidi"]["trained"] and result["ar"]["mode"] == "forced"
    assert 0.9 <= result["parameter_ratio"] <= 1.1


def test_precision_follows_the_hardware(result):
    """--dtype auto: FractalMIDI in bf16 where this CPU has native bf16, else float32; the
    baseline in float32 on a CPU (its best there); the command line says so."""
    fm_bf16 = bench.cpu_has_native_bf16()
    assert result["fractalmidi"]["precision"].startswith("bfloat16" if fm_bf16 else "float32")
    assert result["ar"]["precision"].startswith("float32")
    assert "--dtype auto --ar-dtype auto" in result["command"]
    assert bench.resolve_dtype("auto", "cuda") == "bfloat16" and bench.resolve_dtype("float32", "cuda") == "float32"
    assert bench.resolve_ar_dtype("auto", "bfloat16", "cuda") == "bfloat16"
    assert bench.resolve_ar_dtype("auto", "bfloat16", "cpu") == "float32"


def test_fractalmidi_passes_do_not_grow_and_ar_passes_are_tokens(result):
    rows = result["rows"]
    assert len({r["fractalmidi_passes"] for r in rows}) == 1
    tpb = result["tokens_per_bar"]["mean"]
    for r in rows:
        assert r["ar_passes"] == r["ar_tokens"] == round(tpb * r["bars"])


def test_table_names_the_columns(result):
    table = bench.format_table(result)
    for word in ("steps", "speed-up", "FM passes", "AR tokens", "peak MiB", "music s/s", "untrained"):
        assert word in table


def test_bad_arguments(capsys):
    assert main(["bench", "--config", "hub_configs/tiny.json", "--lengths", "100", "--no-memory"]) == 2
    assert "not a whole number of 4/4 bars" in capsys.readouterr().err
    assert main(["bench", "--config", "no/such.json"]) == 2
    assert "no such config" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "--config", "hub_configs/tiny.json", "--model", "x"])


def test_default_model_or_a_clear_error(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(bench, "DEFAULT_MODEL", tmp_path / "missing")
    assert main(["bench", "--lengths", "64", "--no-memory"]) == 2
    err = capsys.readouterr().err
    assert "--config hub_configs/small.json" in err and "--model" in err


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/stat (Linux); elsewhere the load average is used")
def test_other_work_is_told_apart_from_the_benchmarks_own():
    """The 'other work was running' note counts other processes' CPU time, not the benchmark's
    own threads (a 2-thread run on 2 cores is not 'other work'). Measured against the machine's
    background over the same kind of window, so that other load on the test machine cancels."""
    import subprocess
    import time

    def spin(seconds):
        t0, x = time.perf_counter(), 0
        while time.perf_counter() - t0 < seconds:
            x += 1

    def other_during(action, seconds):
        start, t0 = bench._cpu_seconds(), time.perf_counter()
        action(seconds)
        return bench.other_work_cores(start, time.perf_counter() - t0)

    background = other_during(time.sleep, 1.0)
    assert other_during(spin, 1.0) - background < 0.3  # this process busy: not other work
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # another process
    try:
        time.sleep(0.2)
        busy = other_during(time.sleep, 1.0)
    finally:
        hog.kill()
        hog.wait()
    assert busy - background > 0.5
