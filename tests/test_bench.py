"""`python -m benchmarks.bench` on tiny models: it runs, its JSON holds every field, passes do not grow."""

import io
import json
import sys
from contextlib import redirect_stderr, redirect_stdout

import pytest
import torch

from benchmarks import bench
from benchmarks.baseline import default_generation_config, remi_tokenizer, save_tokenizer, special_ids
from benchmarks.bench import main

ROW_FIELDS = (
    # the names
    "steps", "fractalmidi_seconds", "ar_seconds", "speedup", "fractalmidi_passes", "ar_passes", "ar_tokens",
    # and the rest of the table
    "bars", "ar_tokens_per_bar", "ar_seconds_per_token", "fractalmidi_peak_mb", "ar_peak_mb",
    "fractalmidi_process_peak_mb", "ar_process_peak_mb", "music_seconds", "ar_music_seconds",
    "fractalmidi_music_per_second", "ar_music_per_second",
)
TOKENS_PER_BAR = 6  # the tiny baseline's token bound per bar: its runs stay a few dozen tokens long


def run_bench(argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def ar_folder(tmp_path_factory):
    """A tiny random LlamaForCausalLM baseline over the REMI vocabulary, saved as a trained one is."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = remi_tokenizer()
    ids = special_ids(tokenizer)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=False, pad_token_id=ids["PAD"], bos_token_id=ids["BOS"],
                         eos_token_id=ids["EOS"])
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    model.generation_config = default_generation_config(config)
    folder = tmp_path_factory.mktemp("ar-baseline")
    model.save_pretrained(folder)
    save_tokenizer(tokenizer, folder)
    return folder


def tiny_argv(ar_folder, *more):
    return ["--config", "hub_configs/tiny.json", "--ar-model", str(ar_folder),
            "--ar-max-tokens-per-bar", str(TOKENS_PER_BAR), "--repeats", "1", *more]


@pytest.fixture(scope="module")
def result(ar_folder):
    """One run at 1 and 2 bars (memory subprocesses included), as JSON."""
    code, out, err = run_bench(tiny_argv(ar_folder, "--lengths", "16", "32", "--json"))
    assert code == 0, err
    return json.loads(out)


def test_json_has_every_field(result):
    assert [r["steps"] for r in result["rows"]] == [16, 32]
    assert [r["bars"] for r in result["rows"]] == [1, 2]
    for row in result["rows"]:
        for field in ROW_FIELDS:
            assert field in row, field
        assert row["fractalmidi_seconds"] > 0 and row["ar_seconds"] > 0
        assert row["speedup"] == pytest.approx(row["ar_seconds"] / row["fractalmidi_seconds"])
        # over the bars each run began (a run stopped by its token bound began fewer than asked)
        per_bar = [t / max(1, b) for t, b in zip(row["ar_tokens_runs"], row["ar_bars_made_runs"])]
        assert row["ar_tokens_per_bar"] == pytest.approx(sorted(per_bar)[len(per_bar) // 2])
        assert row["fractalmidi_peak_mb"] > 0 and row["ar_peak_mb"] > 0
        if sys.platform.startswith("linux"):
            assert row["fractalmidi_peak_exact"] and row["ar_peak_exact"]
    for key in ("machine", "fractalmidi", "ar", "memory_method", "command", "notes", "parameter_ratio"):
        assert key in result
    assert not result["fractalmidi"]["trained"]
    ar = result["ar"]
    assert (ar["num_layers"], ar["hidden_size"], ar["vocab_size"]) == (2, 32, len(remi_tokenizer()))
    assert (ar["cache"], ar["compile"]) == (bench.DEFAULT_AR_CACHE, bench.DEFAULT_AR_COMPILE)
    assert (ar["temperature"], ar["top_p"]) == (0.8, 0.95)  # its saved generation config


def test_fractalmidi_passes_do_not_grow_and_ar_passes_are_its_tokens(result):
    rows = result["rows"]
    assert len({r["fractalmidi_passes"] for r in rows}) == 1
    for r in rows:
        assert r["ar_passes_runs"] == r["ar_tokens_runs"]  # batch 1: one pass per generated token
        assert r["ar_passes"] == r["ar_tokens"]
        # an untrained model may never write a Bar token: then it stops at its bound
        assert 1 <= r["ar_tokens"] <= (r["bars"] + 1) * TOKENS_PER_BAR
        if r["ar_bars_made_runs"][0] < r["bars"]:
            assert r["ar_tokens"] == (r["bars"] + 1) * TOKENS_PER_BAR
            assert any("token bound" in n for n in result["notes"])


def test_table_names_the_columns(result):
    table = bench.format_table(result)
    for word in ("steps", "speed-up", "FM passes", "AR passes", "AR tokens", "AR tokens/bar", "peak MiB",
                 "music s/s", "LlamaForCausalLM", "untrained", f"{bench.DEFAULT_AR_CACHE} cache"):
        assert word in table


def test_precision_follows_the_device(result):
    """--dtype auto: FractalMIDI in float32 on a CPU (bf16 was slower there), bf16 on CUDA where
    the GPU has it; the baseline in float32 on a CPU, as FractalMIDI on CUDA."""
    assert result["fractalmidi"]["precision"].startswith("float32")
    assert result["ar"]["precision"].startswith("float32")
    assert "--dtype auto --ar-dtype auto" in result["command"]
    assert bench.resolve_dtype("auto", "cpu") == "float32"
    assert bench.resolve_dtype("bfloat16", "cpu") == "bfloat16"
    assert bench.resolve_dtype("float32", "cuda") == "float32"
    assert bench.resolve_ar_dtype("auto", "bfloat16", "cuda") == "bfloat16"
    assert bench.resolve_ar_dtype("auto", "bfloat16", "cpu") == "float32"
    assert bench.resolve_ar_dtype("bfloat16", "float32", "cpu") == "bfloat16"


def test_bf16_on_cuda_where_supported(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert bench.resolve_dtype("auto", "cuda") == "bfloat16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert bench.resolve_dtype("auto", "cuda") == "float32"


def test_static_cache_and_compile_are_set_on_the_generation_config(ar_folder):
    from benchmarks.baseline import load_baseline

    model, _ = load_baseline(ar_folder)
    dynamic = bench.ar_generation_config(model, "dynamic", False, "cpu")
    assert dynamic.cache_implementation is None and dynamic.disable_compile
    static = bench.ar_generation_config(model, "static", True, "cpu")
    assert static.cache_implementation == "static" and not static.disable_compile
    assert static.compile_config is not None and static.compile_config._compile_all_devices
    assert model.generation_config.cache_implementation is None  # the model's own config is untouched


def test_variants_report_a_failed_compile_as_a_row(ar_folder, monkeypatch):
    """--ar-variants: dynamic, static and static + compile; a compile that fails (here made to)
    is a row with its error, the others are measured."""
    def no_compiler(*args, **kwargs):
        raise RuntimeError("no C++ compiler here")

    monkeypatch.setattr(torch, "compile", no_compiler)
    code, out, err = run_bench(tiny_argv(ar_folder, "--ar-variants", "--lengths", "32", "16", "--json"))
    assert code == 0, err
    result = json.loads(out)
    assert result["steps"] == 16  # the smallest length
    rows = {v["variant"]: v for v in result["variants"]}
    assert list(rows) == ["dynamic", "static", "static+compile"]
    assert "no C++ compiler here" in rows["static+compile"]["error"]
    for name in ("dynamic", "static"):
        assert rows[name]["seconds"] > 0 and rows[name]["passes"] == rows[name]["tokens"]
    # the same seeds: the static cache samples the same tokens as the dynamic one
    assert rows["dynamic"]["tokens"] == rows["static"]["tokens"]
    assert result["fastest"] in ("dynamic", "static")
    table = bench.format_variants(result)
    for word in ("variant", "ms/token", "static+compile failed: RuntimeError: no C++ compiler here", "fastest:"):
        assert word in table


def test_memory_on_the_first_timed_run_adds_no_run(ar_folder, monkeypatch):
    """--memory first-run: each model's memory is measured on its first timed run at each
    length, in this process: no memory subprocess, and exactly warm-up + --repeats runs of each."""
    if not bench.first_run_memory_available():  # not Linux: a one-line error before any model loads
        code, _, err = run_bench(tiny_argv(ar_folder, "--lengths", "16", "--memory", "first-run"))
        assert code == 2 and "/proc/self/clear_refs" in err
        return
    calls = {"fm": 0, "ar": 0}
    fm_generate, ar_generate = bench.generate_fm, bench.generate_ar

    def count(kind, real):
        def run(*args, **kwargs):
            calls[kind] += 1
            return real(*args, **kwargs)
        return run

    monkeypatch.setattr(bench, "generate_fm", count("fm", fm_generate))
    monkeypatch.setattr(bench, "generate_ar", count("ar", ar_generate))
    monkeypatch.setattr(bench, "peak_memory_subprocess", lambda spec: pytest.fail("no subprocess with first-run"))
    code, out, err = run_bench(tiny_argv(ar_folder, "--lengths", "16", "32", "--repeats", "2",
                                         "--memory", "first-run", "--json"))
    assert code == 0, err
    result = json.loads(out)
    assert calls == {"fm": 2 * 3, "ar": 2 * 3}  # per length: a warm-up and 2 timed runs, nothing more
    assert result["memory"] == "first-run" and "first timed run" in result["memory_method"]
    assert "--memory first-run" in result["command"]
    for row in result["rows"]:
        assert row["fractalmidi_peak_mb"] >= 0 and row["ar_peak_mb"] >= 0
        assert row["fractalmidi_peak_exact"] and row["ar_peak_exact"]
        assert row["fractalmidi_process_peak_mb"] > row["fractalmidi_peak_mb"]
    assert "first timed run" in bench.format_table(result)


def test_the_memory_worker_warms_up_before_it_measures(ar_folder, monkeypatch):
    """--memory fresh-process: the worker runs generate twice, a warm-up as before the timed
    runs (seed WARMUP_SEED) and then the measured run, so one-time allocations are not counted."""
    seeds = []
    fm_generate, ar_generate = bench.generate_fm, bench.generate_ar
    monkeypatch.setattr(bench, "generate_fm", lambda m, bars, seed, *a: seeds.append(("fm", seed)) or fm_generate(m, bars, seed, *a))
    monkeypatch.setattr(bench, "generate_ar", lambda m, t, bars, seed, *a, **k: seeds.append(("ar", seed)) or ar_generate(m, t, bars, seed, *a, **k))
    fm = bench.memory_worker({"kind": "fractalmidi", "bars": 1, "seed": 0, "cfg": 1.0, "dtype": "float32",
                              "config": "hub_configs/tiny.json"})
    ar = bench.memory_worker({"kind": "ar", "bars": 1, "seed": 0, "dtype": "float32", "model": str(ar_folder),
                              "cache": "dynamic", "max_tokens_per_bar": TOKENS_PER_BAR})
    assert seeds == [("fm", bench.WARMUP_SEED), ("fm", 0), ("ar", bench.WARMUP_SEED), ("ar", 0)]
    for got in (fm, ar):
        assert got["passes"] >= 1 and got["peak_delta_bytes"] >= 0
        assert got["process_peak_bytes"] >= got["rss_before_bytes"] > 0


def test_peak_rss_counts_memory_reused_from_earlier_work():
    """PeakRSS: 64 MiB written inside the block show in its peak, even when the same amount was
    allocated and freed before it (freed pages are handed back first, so reuse is counted)."""
    if not bench.first_run_memory_available():
        with pytest.raises(bench.InputError, match="clear_refs"):
            with bench.PeakRSS():
                pass
        return
    size = 64 * 2**20
    earlier = torch.ones(size // 4)  # allocated, touched and freed before the measured block
    del earlier
    with bench.PeakRSS() as m:
        block = torch.ones(size // 4)
    got = m.result()
    assert got["exact"] and got["process_peak_bytes"] >= got["rss_before_bytes"]
    assert got["peak_delta_bytes"] >= 0.9 * size
    del block
    with bench.PeakRSS() as m:  # nothing allocated: no 64 MiB rise
        pass
    assert m.result()["peak_delta_bytes"] < 0.5 * size


def test_peak_rss_without_proc_is_an_upper_bound_or_an_error(monkeypatch):
    """Where the peak cannot be reset (no /proc): the fresh-process worker's PeakRSS falls back to
    getrusage's peak since the process started (exact only if the block raised it), and
    --memory first-run's is an InputError."""
    monkeypatch.setattr(bench, "_reset_peak_rss", lambda: False)
    monkeypatch.setattr(bench, "_status_bytes", lambda field: None)
    peaks = iter([1000, 1000])  # ru_maxrss before and after: the block did not raise it
    monkeypatch.setattr(bench, "_maxrss_bytes", lambda: next(peaks))
    with bench.PeakRSS(require_reset=False) as m:
        pass
    assert m.result() == {"peak_delta_bytes": 0, "exact": False, "process_peak_bytes": 1000, "rss_before_bytes": 1000}
    peaks = iter([1000, 5000])  # raised by the block: its own peak
    with bench.PeakRSS(require_reset=False) as m:
        pass
    assert m.result() == {"peak_delta_bytes": 4000, "exact": True, "process_peak_bytes": 5000, "rss_before_bytes": 1000}
    with pytest.raises(bench.InputError, match="clear_refs"):
        with bench.PeakRSS():
            pass


def test_the_baselines_warm_up_runs_its_decode_step_even_when_its_time_is_up(ar_folder, monkeypatch):
    """The warm-up stops after AR_WARMUP_SECONDS, but never before AR_WARMUP_TOKENS tokens (the
    prompt's pass and decode steps): with a slow first pass (a long static cache), stopping on
    time alone left the compile of the decode step to the first timed run."""
    from benchmarks.baseline import load_baseline

    model, tokenizer = load_baseline(ar_folder)
    config = bench.ar_generation_config(model, "static", False, "cpu")
    monkeypatch.setattr(bench, "AR_WARMUP_SECONDS", 0.0)  # its time is up from the start
    got = bench.warm_up_ar(model, tokenizer, 4, config, TOKENS_PER_BAR)
    assert got.passes == bench.AR_WARMUP_TOKENS < 5 * TOKENS_PER_BAR
    stop = bench.WarmedUp(3600.0, 2)  # tokens enough, time not up: it goes on
    assert not bool(stop(torch.ones(1, 10, dtype=torch.long), None)[0])
    assert bool(bench.WarmedUp(0.0, 2)(torch.ones(1, 3, dtype=torch.long), None)[0])
    assert not bool(bench.WarmedUp(0.0, 2)(torch.ones(1, 2, dtype=torch.long), None)[0])


def test_bad_arguments(ar_folder, capsys):
    def error(argv):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("bench: error: ") and err.count("\n") == 1, err  # one line
        return err

    assert "not a whole number of 4/4 bars" in error(tiny_argv(ar_folder, "--lengths", "100", "--no-memory"))
    assert "not a whole number of 4/4 bars" in error(tiny_argv(ar_folder, "--lengths", "0", "--no-memory"))
    assert "at most 1024 bars" in error(tiny_argv(ar_folder, "--lengths", str(16 * 1025), "--no-memory"))
    assert "--repeats must be at least 1, got 0" in error(tiny_argv(ar_folder, "--lengths", "16") + ["--repeats", "0"])
    assert "--ar-max-tokens-per-bar must be at least 1" in error(
        tiny_argv(ar_folder, "--lengths", "16") + ["--ar-max-tokens-per-bar", "0"])
    assert "--ar-compile needs --ar-cache static" in error(tiny_argv(ar_folder, "--ar-compile", "--lengths", "16"))
    assert "no such config" in error(["--config", "no/such.json", "--ar-model", str(ar_folder), "--lengths", "16"])
    with pytest.raises(SystemExit):
        main(["--config", "hub_configs/tiny.json", "--model", "x"])


def test_missing_baseline_says_how_to_make_it(tmp_path, capsys, monkeypatch):
    missing = tmp_path / "ar-baseline-pop909"
    assert main(["--config", "hub_configs/tiny.json", "--ar-model", str(missing), "--lengths", "16"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(missing) in err and "is not there" in err
    assert "python train_accelerate.py --config hub_configs/ar_baseline.json" in err
    # the default is the shipped baseline's folder
    monkeypatch.setattr(bench, "DEFAULT_AR_MODEL", missing)
    assert main(["--config", "hub_configs/tiny.json", "--lengths", "16"]) == 2
    assert str(missing) in capsys.readouterr().err
    # a folder without the weights or the tokenizer
    missing.mkdir()
    (missing / "config.json").write_text("{}")
    assert main(["--config", "hub_configs/tiny.json", "--ar-model", str(missing), "--lengths", "16"]) == 2
    assert "has no model.safetensors, tokenizer.json" in capsys.readouterr().err


def test_default_model_or_a_clear_error(ar_folder, capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(bench, "DEFAULT_MODEL", tmp_path / "missing")
    assert main(["--ar-model", str(ar_folder), "--lengths", "16", "--no-memory"]) == 2
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
