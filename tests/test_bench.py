"""`python -m benchmarks.bench` on tiny models: it runs, its JSON holds every field, passes do not grow."""

import io
import json
import sys
from contextlib import redirect_stderr, redirect_stdout

import pytest

from benchmarks import bench
from benchmarks.bench import main

ROW_FIELDS = (
    "steps", "bars", "fractalmidi_seconds", "ar_seconds", "ar_tokens", "speedup", "fractalmidi_passes",
    "ar_passes", "fractalmidi_peak_mb", "ar_peak_mb", "fractalmidi_process_peak_mb", "ar_process_peak_mb",
    "music_seconds", "fractalmidi_music_per_second", "ar_music_per_second",
)


@pytest.fixture(scope="module")
def result():
    """One run of the command of the brief (memory subprocesses included), as JSON."""
    argv = ["--config", "hub_configs/tiny.json", "--lengths", "64", "128", "--repeats", "1", "--json"]
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
    assert main(["--config", "hub_configs/tiny.json", "--lengths", "100", "--no-memory"]) == 2
    assert "not a whole number of 4/4 bars" in capsys.readouterr().err
    assert main(["--config", "no/such.json"]) == 2
    assert "no such config" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--config", "hub_configs/tiny.json", "--model", "x"])


def test_default_model_or_a_clear_error(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(bench, "DEFAULT_MODEL", tmp_path / "missing")
    assert main(["--lengths", "64", "--no-memory"]) == 2
    err = capsys.readouterr().err
    assert "--config hub_configs/small.json" in err and "--model" in err


# The "other work was running" note, on fabricated CPU-time readings: what it decides must not
# depend on how busy the machine running the tests is.
STAT = "cpu  {user} 0 {system} {idle} {iowait} 0 0 0 0 0\n"  # clock ticks, as /proc/stat


def _stat(user=0, system=0, idle=0, iowait=0):
    return lambda: STAT.format(user=user, system=system, idle=idle, iowait=iowait)


def test_cpu_seconds_counts_busy_ticks_and_the_processs_own_time():
    """Machine CPU seconds = all ticks but idle and iowait, over the clock rate; own = getrusage's."""
    line = lambda: "cpu  100 5 50 1000 20 3 2 0 0 0\n"
    assert bench._cpu_seconds(line, lambda: 0.7, clock_ticks=100) == pytest.approx((1.6, 0.7))
    # idle and iowait (fields 4 and 5) are not busy, whatever their size
    assert bench._cpu_seconds(_stat(user=300, idle=10**9, iowait=10**6), lambda: 0.0, 100)[0] == pytest.approx(3.0)
    assert bench._cpu_seconds(lambda: "cpu  100 0 100 500\n", lambda: 1.0, 100) == pytest.approx((2.0, 1.0))


def test_cpu_seconds_is_none_without_proc_stat():
    def missing():
        raise FileNotFoundError("/proc/stat")

    own = lambda: pytest.fail("no own time is read when /proc/stat is unreadable")
    assert bench._cpu_seconds(missing, own, 100) is None
    assert bench._cpu_seconds(lambda: "cpu  a b c d\n", own, 100) is None
    assert bench._cpu_seconds(lambda: "", own, 100) is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/stat (Linux)")
def test_cpu_seconds_reads_this_machine():
    """The real readers (no timing asserted: only that /proc/stat and getrusage are read)."""
    assert bench._read_proc_stat().split()[0] == "cpu"
    reading = bench._cpu_seconds()
    assert reading is not None and reading[0] >= 0 and reading[1] >= 0
    assert bench.other_work_cores(reading, 1.0) >= 0


def test_other_work_is_told_apart_from_the_benchmarks_own():
    """Other work = the machine's CPU time minus the benchmark's own, over the wall time: a
    2-thread run keeping 2 cores busy is not other work; another process's CPU time is."""
    start = bench._cpu_seconds(_stat(user=1000, system=200, idle=5000), lambda: 3.0, 100)  # (12 s, 3 s)
    # 2 s of wall time, the benchmark's two threads busy throughout: 4 machine s, all its own
    own_only = bench._cpu_seconds(_stat(user=1400, system=200, idle=5000), lambda: 7.0, 100)
    assert bench.other_work_cores(start, 2.0, lambda: own_only) == pytest.approx(0.0)
    # the same, and another process keeping one more core busy: 2 more machine s, not its own
    with_hog = bench._cpu_seconds(_stat(user=1500, system=300, idle=5000), lambda: 7.0, 100)
    assert bench.other_work_cores(start, 2.0, lambda: with_hog) == pytest.approx(1.0)
    # the benchmark idle (sleeping) while the machine is busy: all of it is other work
    assert bench.other_work_cores((12.0, 3.0), 4.0, lambda: (14.0, 3.0)) == pytest.approx(0.5)
    # tick rounding can make the own time exceed the machine's: never below zero
    assert bench.other_work_cores((12.0, 3.0), 1.0, lambda: (12.5, 3.6)) == 0.0
    # no reading (no /proc) or no wall time: unknown
    assert bench.other_work_cores(None, 2.0, lambda: (14.0, 3.0)) is None
    assert bench.other_work_cores((12.0, 3.0), 2.0, lambda: None) is None
    assert bench.other_work_cores((12.0, 3.0), 0.0, lambda: (14.0, 3.0)) is None


def test_other_work_note():
    """The note appears above a quarter of a core of other work, and says how much; without
    /proc the load average less the benchmark's own threads stands in."""
    start = (12.0, 3.0)
    info = {"cpu_cores": 2}
    assert bench.other_work_note(info, start, 2.0, threads=2, read=lambda: (16.0, 7.0)) is None
    assert info["other_work_cores"] == 0.0
    assert bench.other_work_note(info, start, 2.0, threads=2, read=lambda: (16.4, 7.0)) is None  # 0.2 core
    note = bench.other_work_note(info, start, 2.0, threads=2, read=lambda: (18.0, 7.0))
    assert info["other_work_cores"] == 1.0
    assert note.startswith("Other work was running (on average 1.00 of 2 cores busy with other processes)")
    # no /proc: the load average counts the benchmark's own threads, which are taken off
    info = {"cpu_cores": 2, "load_average_at_start": 0.5, "load_average_at_end": 2.1}
    assert bench.other_work_note(info, None, 2.0, threads=2, read=lambda: None) is None
    assert "other_work_cores" not in info
    info["load_average_at_end"] = 3.5
    assert "1.50 of 2 cores" in bench.other_work_note(info, None, 2.0, threads=2, read=lambda: None)
    assert bench.other_work_note({"cpu_cores": 2}, None, 2.0, threads=2, read=lambda: None) is None
