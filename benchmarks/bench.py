"""`python -m benchmarks.bench` (from the repository root): FractalMIDI `generate` against the trained autoregressive baseline, same machine, same process.

    python -m benchmarks.bench [--model PATH | --config hub_configs/small.json] [--ar-model PATH]
                      [--device cpu|cuda] [--lengths 256 1024 4096] [--repeats 3]
                      [--memory fresh-process|first-run] [--json]
    python -m benchmarks.bench --ar-variants [--lengths 1024] [--repeats 1]

What is measured (batch 1, one process):
- FractalMIDI: `model.generate(num_bars=L / 16, time_signatures=(4, 4), seed=r)` with the
  model's own defaults (iterations, refinement, cfg 1 unless --cfg): L steps = L/16 bars of 4/4.
  Default model: the shipped one (`fractalmidi.controls.DEFAULT_MODEL`).
- The baseline (`benchmarks/baseline.py`): transformers' `LlamaForCausalLM` over miditok REMI
  tokens, trained on the same data (default `checkpoints/ar-baseline-pop909`), sampling with
  transformers' `generate` (its saved generation config: temperature, top-p) through
  `generate_bars`: from BOS until it begins bar L/16 + 1, so it makes the same bars with as
  many tokens as it decides (reported: tokens, tokens per bar), or until its token bound
  ((bars + 1) x --ar-max-tokens-per-bar; runs stopped by it are noted). Its cache: transformers'
  dynamic cache, or its static cache (--ar-cache static: preallocated for the token bound), the
  decode step compiled by transformers' own `generate` (`compile_config`, --ar-compile: static
  cache only). `--ar-variants` times dynamic, static and static + compile at the smallest length
  (a compile that fails is reported as a row), to choose between them.
- Timing: before each length's timed runs, a warm-up of each model at that length (FractalMIDI:
  one whole run; the baseline: a run stopped after AR_WARMUP_SECONDS once it has made
  AR_WARMUP_TOKENS, enough to build its cache and compile and run its decode step); then `--repeats`
  runs of each (seeds 0, 1, ...), the median reported. Wall-clock time of the `generate` call
  alone (`time.perf_counter`, after `torch.cuda.synchronize` on CUDA): turning tokens or states
  into notes is not timed.
- Sequential passes: FractalMIDI's `num_forward_passes`; the baseline's is one per generated
  token (`ARGeneration.passes`).
- Peak memory: on CPU, every measurement runs once more in a fresh Python subprocess
  (`python -m benchmarks.bench --memory-worker SPEC`) that loads the model, warms it up as the
  timed runs are (without that, a first `generate` also counts about 60 MiB of one-time
  allocations, lazy imports and kernel caches, that stay resident: 78 MiB against 19 MiB for
  FractalMIDI at 256 steps), hands the heap's free pages back, resets its peak RSS to its
  current RSS (Linux: /proc/self/clear_refs), runs `generate` once, and reports the peak RSS
  during it (VmHWM) minus the RSS before: the working memory of generation (activations, KV
  cache, outputs), not the interpreter and weights, which are reported apart as the process
  peak. The baseline runs there with its cache but not compiled (compiling
  would count the compiler's own memory; compiling changes the kernels, not what is stored).
  (tracemalloc does not see torch's allocations; `getrusage`'s ru_maxrss cannot be reset and,
  after fork + exec, starts at the parent's RSS, so it is only the fallback where /proc is
  missing, flagged as an upper bound.) On CUDA, `torch.cuda.max_memory_allocated()` minus the
  memory allocated before, in this process. `--memory first-run` measures instead each model's
  first timed run at each length, in this process (on a CPU: gc and glibc's malloc_trim hand the
  heap's free pages back, the peak RSS is reset, and the peak during generate minus the RSS
  before is reported): no extra run, for lengths where one run of the baseline takes an hour.
  The two agreed within 11 MiB, first-run the higher for the baseline (MiB, fresh-process /
  first-run: 256 steps, FractalMIDI 19.2 / 18.0, the baseline 39.1 / 43.8; 1024 steps, 72.5 /
  75.6 and 163.9 / 174.6).
- Seconds of music per second of compute: each model's piece's duration divided by its median
  time (FractalMIDI's piece at its generated tempi; REMI has no tempo tokens here, so the
  baseline's bars are at the 120 BPM its decoder writes).
- Precision (`--dtype`, `--ar-dtype`): by default FractalMIDI in float32 on a CPU (bf16 was
  slower for this model there: 1.83 s against 1.15 s at 4096 steps) and in bf16 on CUDA where
  the GPU supports it; the baseline in float32 on a CPU, as FractalMIDI on CUDA. On CUDA,
  attention through sdpa, or flash_attention_2 where the flash_attn package is installed.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from fractalmidi import controls
from fractalmidi.errors import InputError

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = controls.DEFAULT_MODEL
DEFAULT_AR_MODEL = REPO / "checkpoints" / "ar-baseline-pop909"
TRAIN_AR = "python train_accelerate.py --config hub_configs/ar_baseline.json --dataset DATA --output_dir OUT"
BAR_STEPS = 16  # a 4/4 bar on the grid of every FractalMIDI config and of the REMI tokenizer (4 steps a beat)
WARMUP_SEED = 1000
AR_WARMUP_SECONDS = 1.0  # the baseline's warm-up stops after this, once it has made AR_WARMUP_TOKENS
AR_WARMUP_TOKENS = 4  # the prompt's pass and 3 decode steps: a compiled decode step has been compiled and run
# The baseline's default cache and compile: the fastest of `--ar-variants` on this 2-core CPU (the
# trained baseline, 1024 steps, 1 thread, the other core busy): dynamic 124.9 s, static 382.7 s, static +
# compile 344.1 s for the same 5,094 tokens. The static cache is as long as the token bound (here its
# position limit, 32,767) and attended whole at every step; compiling the decode step gains 10%.
DEFAULT_AR_CACHE = "dynamic"
DEFAULT_AR_COMPILE = False
DEFAULT_MEMORY = "fresh-process"
NO_FIRST_RUN = "--memory first-run needs Linux's /proc/self/clear_refs to reset the peak RSS; use --memory fresh-process here"
AR_VARIANTS = (("dynamic", "dynamic", False), ("static", "static", False), ("static+compile", "static", True))


# ----------------------------------------------------------------------------- models
def _shown(path) -> str:
    """A path relative to the repository when it lies inside it."""
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def load_fractalmidi(model_path=None, config_path=None):
    """(model, description, trained): --model, else --config (random weights), else the default."""
    from transformers.utils import logging as hf_logging

    from fractalmidi import FractalMIDIConfig, FractalMIDIModel

    hf_logging.disable_progress_bar()
    if model_path is None and config_path is None:
        if not (DEFAULT_MODEL / "config.json").is_file():
            raise InputError(
                f"the shipped model {_shown(DEFAULT_MODEL)} is not there: give --model PATH, or "
                "--config hub_configs/small.json to time an untrained model of that size (same speed, random music)"
            )
        model_path = DEFAULT_MODEL
    if model_path is not None:
        path = Path(model_path)
        if not (path / "config.json").is_file():
            raise InputError(f"{path}: no model there (expected config.json and model.safetensors)")
        return FractalMIDIModel.from_pretrained(path).eval(), f"trained model {_shown(path)}", True
    path = Path(config_path)
    if not path.is_file():
        raise InputError(f"{path}: no such config file")
    try:
        config = FractalMIDIConfig.from_json_file(str(path))
    except (ValueError, OSError) as e:
        raise InputError(f"{path}: not a FractalMIDI config ({e})") from None
    return FractalMIDIModel(config).eval(), f"untrained model (random weights) of config {path}", False


def check_ar_folder(path) -> Path:
    """The baseline's folder, or a one-line error that says how to make it."""
    path = Path(path)
    missing = [f for f in ("config.json", "model.safetensors", "tokenizer.json") if not (path / f).is_file()]
    if missing:
        what = "is not there" if not path.is_dir() else f"has no {', '.join(missing)}"
        raise InputError(f"the baseline model {_shown(path)} {what}: train it with `{TRAIN_AR}` and give "
                         "--ar-model OUT/final (or copy OUT/final there)")
    return path


def load_ar(path, device: str, dtype: str):
    """(model, tokenizer) of a baseline folder, in `dtype` on `device`."""
    import torch
    from transformers.utils import logging as hf_logging

    from benchmarks.baseline import load_baseline

    hf_logging.disable_progress_bar()
    return load_baseline(check_ar_folder(path), device=device, dtype=getattr(torch, dtype))


# ----------------------------------------------------------------------------- precision
def resolve_dtype(dtype: str, device: str) -> str:
    """FractalMIDI's precision: "auto" -> float32 on a CPU (bf16 was slower for this model there:
    1.83 s against 1.15 s at 4096 steps), bfloat16 on CUDA where the GPU supports it."""
    if dtype != "auto":
        return dtype
    if device == "cuda":
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    return "float32"


def resolve_ar_dtype(ar_dtype: str, dtype: str, device: str) -> str:
    """The baseline's precision: "auto" -> FractalMIDI's on CUDA, float32 on a CPU (its one-token
    steps are matrix-vector products, which bf16 did not speed up there)."""
    if ar_dtype != "auto":
        return ar_dtype
    return dtype if device == "cuda" else "float32"


def prepare(model, device: str, dtype: str) -> str:
    """Move a model to the device and dtype (in place); on CUDA choose the attention kernel.
    Returns the description."""
    import torch

    model.to(device=device, dtype=getattr(torch, dtype))
    impl = model.config._attn_implementation or "sdpa"
    if device == "cuda":
        from transformers.utils import is_flash_attn_2_available

        impl = "flash_attention_2" if is_flash_attn_2_available() else "sdpa"
        with contextlib.suppress(Exception):
            model.set_attn_implementation(impl)
        impl = model.config._attn_implementation or impl
    return f"{dtype}, attention {impl}"


# ----------------------------------------------------------------------------- generation
def ar_generation_config(model, cache: str, compile: bool, device: str):
    """The baseline's saved generation config with its cache and compile set: "static" is
    transformers' StaticCache (preallocated for the token bound), "dynamic" its DynamicCache;
    compile hands the decode step to `torch.compile` through transformers' own `compile_config`
    (which it applies with a static cache only, and on a CPU only when told to)."""
    from transformers import CompileConfig

    config = copy.deepcopy(model.generation_config)
    config.cache_implementation = "static" if cache == "static" else None
    if compile:
        compile_config = CompileConfig(mode="reduce-overhead" if device == "cuda" else "default")
        compile_config._compile_all_devices = True  # transformers compiles on CPUs only when asked
        config.compile_config = compile_config
    else:
        config.disable_compile = True  # on CUDA transformers would compile a static cache's decode step itself
    return config


def generate_fm(model, bars: int, seed: int, cfg: float, device: str):
    """(seconds, FractalMIDIGeneration) of one `generate`."""
    import torch

    _sync(device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        result = model.generate(num_bars=bars, time_signatures=(4, 4), seed=seed, guidance_scale=cfg)
    _sync(device)
    return time.perf_counter() - t0, result


class WarmedUp:
    """transformers `StoppingCriteria` for the baseline's warm-up: stop once `seconds` have passed
    and at least `min_tokens` were made. (transformers' `max_time` alone can stop after the
    prompt's pass, when a long static cache makes that pass slow, before any decode step: the
    compile, where it is on, would then fall in the first timed run.)"""

    def __init__(self, seconds: float, min_tokens: int, prompt_length: int = 1):
        self.deadline = time.perf_counter() + seconds
        self.min_length = prompt_length + min_tokens

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        done = input_ids.shape[1] >= self.min_length and time.perf_counter() >= self.deadline
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


def generate_ar(model, tokenizer, bars: int, seed: int, config, max_tokens_per_bar: int, stop=()):
    """`generate_bars` (its `seconds`: the `generate` call alone); `stop`: more stopping criteria (warm-up)."""
    from benchmarks.baseline import generate_bars

    return generate_bars(model, tokenizer, bars, seed=seed, generation_config=config,
                         max_tokens_per_bar=max_tokens_per_bar, stopping_criteria=stop)


def warm_up_ar(model, tokenizer, bars: int, config, max_tokens_per_bar: int):
    """A run of `bars` bars stopped after AR_WARMUP_SECONDS and AR_WARMUP_TOKENS tokens at least:
    with the token bound and so the static cache of this length's size, and its decode step
    compiled and run where compile is on."""
    return generate_ar(model, tokenizer, bars, WARMUP_SEED, config, max_tokens_per_bar,
                       stop=(WarmedUp(AR_WARMUP_SECONDS, AR_WARMUP_TOKENS),))


def _sync(device: str):
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


# ----------------------------------------------------------------------------- memory
def _status_bytes(field: str) -> int | None:
    """A size from /proc/self/status (Linux), e.g. VmRSS (resident now) or VmHWM (its peak), or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the process's peak RSS to its current RSS (Linux >= 4.0: `5` into /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _maxrss_bytes() -> int:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def _release_free_memory() -> None:
    """Collect garbage and hand the C heap's free pages back to the system (glibc `malloc_trim`,
    where there is one), so that memory a run reuses from earlier runs counts in its peak RSS."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError, TypeError):
        ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)


class PeakRSS:
    """`with PeakRSS() as m: run()`: the peak resident memory during the block above the resident
    memory before it, after handing the heap's free pages back; `m.result()`: peak_delta_bytes,
    exact, process_peak_bytes, rss_before_bytes.

    On Linux the peak is reset just before the block (VmHWM to VmRSS, via /proc/self/clear_refs),
    so the peak after it is the block's own: exact. Where that is not possible, `require_reset`
    makes it an InputError (--memory first-run); otherwise the peak since the process started is
    used (getrusage's ru_maxrss where /proc is missing): an upper bound, `exact` false when
    something before the block peaked higher."""

    def __init__(self, require_reset: bool = True):
        self.require_reset = require_reset

    def __enter__(self):
        _release_free_memory()
        self.reset = _reset_peak_rss()
        if self.require_reset and not self.reset:
            raise InputError(NO_FIRST_RUN)
        self.before = _status_bytes("VmRSS")
        self.peak_before = _status_bytes("VmHWM") if self.reset else _maxrss_bytes()
        return self

    def __exit__(self, *exc):
        self.peak = max(_status_bytes("VmHWM") or 0, 0 if self.reset else _maxrss_bytes())
        return False

    def result(self) -> dict:
        base = self.before if self.before is not None else self.peak_before
        return {"peak_delta_bytes": max(self.peak - base, 0), "exact": self.reset or self.peak > self.peak_before,
                "process_peak_bytes": self.peak, "rss_before_bytes": base}


def first_run_memory_available() -> bool:
    """Whether this process can reset its peak RSS (Linux >= 4.0), as `--memory first-run` needs."""
    return _status_bytes("VmHWM") is not None and _reset_peak_rss()


def memory_worker(spec: dict) -> dict:
    """Run in a fresh process: load the model of `spec`, warm it up as the timed runs are, run
    generate once more, and report the peak resident memory during that run above the
    resident memory before it (`PeakRSS`: exact on Linux, an upper bound elsewhere when
    imports, the model's construction or the warm-up peaked higher)."""
    import torch

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    if spec["kind"] == "fractalmidi":
        fm, _, _ = load_fractalmidi(spec.get("model"), spec.get("config"))
        prepare(fm, "cpu", spec["dtype"])
        warm_up = lambda: generate_fm(fm, spec["bars"], WARMUP_SEED, spec["cfg"], "cpu")
        run = lambda: generate_fm(fm, spec["bars"], spec["seed"], spec["cfg"], "cpu")[1].num_forward_passes
    else:
        ar, tokenizer = load_ar(spec["model"], "cpu", spec["dtype"])
        config = ar_generation_config(ar, spec["cache"], False, "cpu")
        warm_up = lambda: warm_up_ar(ar, tokenizer, spec["bars"], config, spec["max_tokens_per_bar"])
        run = lambda: generate_ar(ar, tokenizer, spec["bars"], spec["seed"], config, spec["max_tokens_per_bar"]).passes
    warm_up()  # as before the timed runs: one-time allocations (lazy imports, kernel caches) are not generate's
    # (ru_maxrss also holds the parent's RSS at fork, which exec keeps: VmHWM is this image's own)
    startup_peak = _status_bytes("VmHWM") or 0
    with PeakRSS(require_reset=False) as m:
        passes = run()
    got = m.result()
    return dict(got, process_peak_bytes=max(startup_peak, got["process_peak_bytes"]), passes=int(passes))


def _absolute(path) -> str | None:
    """A path for the worker, which runs in the repository root."""
    return None if path is None else str(Path(path).resolve())


def peak_memory_subprocess(spec: dict) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.bench", "--memory-worker", json.dumps(spec)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    if out.returncode != 0:
        raise RuntimeError(f"memory measurement failed: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_first_run(device: str, run):
    """(run()'s result, the peak memory of that run): CUDA's allocator peak above the memory
    allocated before, or on a CPU the process's peak RSS above its RSS before (`PeakRSS`)."""
    if device == "cuda":
        box = []
        mem = peak_memory_cuda(lambda: box.append(run()))
        return box[0], mem
    with PeakRSS() as m:
        out = run()
    return out, m.result()


def peak_memory_cuda(run) -> dict:
    """Peak CUDA memory of `run()` above the memory allocated before it."""
    import torch

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    run()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    return {"peak_delta_bytes": peak - before, "exact": True, "process_peak_bytes": peak, "rss_before_bytes": before}


# ----------------------------------------------------------------------------- the machine
def machine_info(device: str) -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    info = {
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    with contextlib.suppress(ImportError):
        import transformers

        info["transformers"] = transformers.__version__
    with contextlib.suppress(OSError, AttributeError):
        info["load_average_at_start"] = round(os.getloadavg()[0], 2)
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _read_proc_stat() -> str:
    """The machine's line of /proc/stat (Linux): "cpu  user nice system idle iowait irq softirq ..." in clock ticks."""
    with open("/proc/stat") as f:
        return f.readline()


def _own_cpu_seconds() -> float:
    """CPU seconds (user + system) this process and its finished children have used (getrusage)."""
    import resource

    return sum(getattr(resource.getrusage(who), k) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
               for k in ("ru_utime", "ru_stime"))


def _cpu_seconds(read_stat=_read_proc_stat, own_seconds=_own_cpu_seconds, clock_ticks: int | None = None
                 ) -> tuple[float, float] | None:
    """(CPU seconds all processes of the machine have used, CPU seconds this process and its
    finished children have used), from /proc/stat and getrusage; None where /proc is missing.

    `read_stat` returns the "cpu ..." line of /proc/stat, `own_seconds` this process's CPU
    seconds and `clock_ticks` is the ticks per second of /proc/stat (default SC_CLK_TCK): given,
    they let the arithmetic be checked on fabricated readings."""
    try:
        fields = [int(x) for x in read_stat().split()[1:]]
    except (OSError, ValueError):
        return None
    if len(fields) < 4:  # not a "cpu user nice system idle ..." line
        return None
    busy = sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)  # all but idle and iowait
    ticks = clock_ticks if clock_ticks is not None else os.sysconf("SC_CLK_TCK")
    return busy / ticks, own_seconds()


def other_work_cores(start: tuple[float, float] | None, seconds: float, read=_cpu_seconds) -> float | None:
    """Mean number of cores other processes kept busy since `start` (a `_cpu_seconds()`): the
    machine's CPU time minus this benchmark's own, over the wall time. `read` gives the reading
    at the end (default `_cpu_seconds`, now)."""
    end = read()
    if start is None or end is None or seconds <= 0:
        return None
    return max((end[0] - start[0]) - (end[1] - start[1]), 0.0) / seconds


def other_work_note(info: dict, cpu_start: tuple[float, float] | None, seconds: float, threads: int,
                    read=_cpu_seconds) -> str | None:
    """The note that other work was running during the benchmark, or None. Records
    `other_work_cores` in `info` where /proc gives it; without /proc, falls back to the load
    average (`load_average_at_start` / `_at_end` of `info`) minus this benchmark's `threads`."""
    other = other_work_cores(cpu_start, seconds, read)
    if other is not None:
        info["other_work_cores"] = round(other, 2)
    else:  # no /proc: the load average, which also counts this benchmark's own threads
        other = max(info.get("load_average_at_start", 0.0), info.get("load_average_at_end", 0.0)) - threads
    if other > 0.25:
        return (f"Other work was running (on average {other:.2f} of {info['cpu_cores']} cores busy with other "
                "processes): absolute times are pessimistic, the ratio is from the same conditions.")
    return None


def _median(xs):
    return float(statistics.median(xs))


# ----------------------------------------------------------------------------- the run
def check_arguments(args) -> list[int]:
    """One-line errors for bad arguments, before any model is loaded; returns the lengths, sorted."""
    if args.repeats < 1:
        raise InputError(f"--repeats must be at least 1, got {args.repeats}")
    if args.threads is not None and args.threads < 1:
        raise InputError(f"--threads must be at least 1, got {args.threads}")
    if args.ar_max_tokens_per_bar < 1:
        raise InputError(f"--ar-max-tokens-per-bar must be at least 1, got {args.ar_max_tokens_per_bar}")
    if args.ar_compile and args.ar_cache != "static":
        raise InputError("--ar-compile needs --ar-cache static (transformers compiles generate's decode step "
                         "with a static cache only)")
    lengths = sorted(set(args.lengths))
    for L in lengths:
        if L < BAR_STEPS or L % BAR_STEPS:
            raise InputError(f"--lengths: {L} is not a whole number of 4/4 bars ({BAR_STEPS} steps each)")
        if L > 1024 * BAR_STEPS:
            raise InputError(f"--lengths: {L} steps is {L // BAR_STEPS} bars; at most 1024 bars ({1024 * BAR_STEPS} steps)")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise InputError("--device cuda: CUDA is not available here")
    elif args.memory == "first-run" and not args.no_memory and not first_run_memory_available():
        raise InputError(NO_FIRST_RUN)
    return lengths


def _ar_info(ar, tokenizer, path, precision, args, cache=None, compile=None) -> dict:
    from benchmarks.baseline import count_parameters

    config, gen = ar.config, ar.generation_config
    return {
        "source": f"baseline {_shown(path)}", "parameters": count_parameters(ar), "precision": precision,
        "num_layers": config.num_hidden_layers, "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size, "num_heads": config.num_attention_heads,
        "vocab_size": len(tokenizer), "temperature": gen.temperature, "top_p": gen.top_p,
        "cache": cache, "compile": compile, "max_tokens_per_bar": args.ar_max_tokens_per_bar,
    }


def _finish(info, cpu_start, wall_start, args) -> list[str]:
    """The notes every result ends with: other work on the machine, then --note."""
    import torch

    with contextlib.suppress(OSError, AttributeError):
        info["load_average_at_end"] = round(os.getloadavg()[0], 2)
    notes = []
    other = other_work_note(info, cpu_start, time.perf_counter() - wall_start, torch.get_num_threads())
    if other is not None:
        notes.append(other)
    return notes + list(args.note or [])


def run_benchmark(args, log=None) -> dict:
    """The whole benchmark (see the module docstring); returns the JSON-able result."""
    import torch

    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    lengths = check_arguments(args)
    ar_path = check_ar_folder(args.ar_model)
    device = args.device
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine_info(device)
    cpu_start, wall_start = _cpu_seconds(), time.perf_counter()

    fm, fm_source, fm_trained = load_fractalmidi(args.model, args.config)
    if 4 * fm.config.steps_per_beat != BAR_STEPS:
        raise InputError(f"FractalMIDI's grid has {fm.config.steps_per_beat} steps a beat; the bench times 4 (16-step bars)")
    dtype = resolve_dtype(args.dtype, device)
    ar_dtype = resolve_ar_dtype(args.ar_dtype, dtype, device)
    fm_precision = prepare(fm, device, dtype)
    ar, tokenizer = load_ar(ar_path, device, ar_dtype)
    ar_precision = prepare(ar, device, ar_dtype)
    ar_config = ar_generation_config(ar, args.ar_cache, args.ar_compile, device)
    from benchmarks.baseline import count_parameters
    from fractalmidi.data import crop

    fm_params = count_parameters(fm)
    ar_info = _ar_info(ar, tokenizer, ar_path, ar_precision, args, args.ar_cache, args.ar_compile)
    log(f"FractalMIDI: {fm_source}, {fm_params:,} parameters, {fm_precision}; baseline: {ar_info['source']}, "
        f"{ar_info['parameters']:,} parameters, {ar_precision}, {args.ar_cache} cache"
        + (", compiled" if args.ar_compile else ""))

    rows = []
    for L in lengths:
        bars = L // BAR_STEPS
        log(f"{L} steps ({bars} bar{'s' if bars > 1 else ''}): warm-up")
        generate_fm(fm, bars, WARMUP_SEED, args.cfg, device)
        try:
            warm_up_ar(ar, tokenizer, bars, ar_config, args.ar_max_tokens_per_bar)
        except Exception as e:  # torch.compile needs a working compiler (C++ on a CPU)
            if not args.ar_compile:
                raise
            raise InputError(f"compiling the baseline failed here ({type(e).__name__}: "
                             f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}): rerun with --no-ar-compile") from None
        first_run = not args.no_memory and args.memory == "first-run"
        mems = {}
        fm_times, fm_result = [], None
        for r in range(args.repeats):
            fm_run = lambda: generate_fm(fm, bars, r, args.cfg, device)
            if first_run and r == 0:
                (t, res), mems["fractalmidi"] = measure_first_run(device, fm_run)
            else:
                t, res = fm_run()
            fm_times.append(t)
            fm_result = fm_result or res
            log(f"  {L} steps, run {r + 1}/{args.repeats}: FractalMIDI {t:.3f} s")
        ar_runs = []
        for r in range(args.repeats):
            ar_run = lambda: generate_ar(ar, tokenizer, bars, r, ar_config, args.ar_max_tokens_per_bar)
            if first_run and r == 0:
                res, mems["ar"] = measure_first_run(device, ar_run)
            else:
                res = ar_run()
            ar_runs.append(res)
            log(f"  {L} steps, run {r + 1}/{args.repeats}: AR {res.seconds:.3f} s, {res.tokens[0]} tokens, "
                f"{res.bars_made[0]} of {bars} bars begun")
        fm_piece = fm_result.to_piece()
        ar_seconds = _median([g.seconds for g in ar_runs])
        ar_tokens = [g.tokens[0] for g in ar_runs]
        row = {
            "steps": L,
            "bars": bars,
            "fractalmidi_seconds": _median(fm_times),
            "ar_seconds": ar_seconds,
            "fractalmidi_passes": int(fm_result.num_forward_passes),
            "ar_passes": int(_median([g.passes for g in ar_runs])),
            "ar_tokens": int(_median(ar_tokens)),
            # over the bars each run began: a run stopped by its token bound made fewer than asked
            "ar_tokens_per_bar": _median([g.tokens_per_bar for g in ar_runs]),
            "ar_seconds_per_token": _median([g.seconds / max(1, g.passes) for g in ar_runs]),
            "fractalmidi_runs": fm_times,
            "ar_runs": [g.seconds for g in ar_runs],
            "ar_tokens_runs": ar_tokens,
            "ar_passes_runs": [int(g.passes) for g in ar_runs],
            "ar_bars_made_runs": [int(g.bars_made[0]) for g in ar_runs],
            "music_seconds": fm_piece.duration_seconds,
            "ar_music_seconds": crop(ar_runs[0].pieces[0], 0, max(1, ar_runs[0].bars_made[0])).duration_seconds,
            "fractalmidi_notes": int(len(fm_piece.notes)),
        }
        row["speedup"] = row["ar_seconds"] / row["fractalmidi_seconds"]
        row["fractalmidi_music_per_second"] = row["music_seconds"] / row["fractalmidi_seconds"]
        row["ar_music_per_second"] = row["ar_music_seconds"] / row["ar_seconds"]
        if not args.no_memory:
            for kind in ("fractalmidi", "ar"):
                if kind in mems:
                    mem = mems[kind]
                elif device == "cuda":
                    run = (lambda: generate_fm(fm, bars, 0, args.cfg, device)) if kind == "fractalmidi" else (
                        lambda: generate_ar(ar, tokenizer, bars, 0, ar_config, args.ar_max_tokens_per_bar))
                    mem = peak_memory_cuda(run)
                elif kind == "fractalmidi":
                    mem = peak_memory_subprocess({
                        "kind": kind, "bars": bars, "seed": 0, "cfg": args.cfg, "dtype": dtype,
                        "threads": torch.get_num_threads(), "model": _absolute(args.model),
                        "config": _absolute(args.config)})
                else:
                    mem = peak_memory_subprocess({
                        "kind": kind, "bars": bars, "seed": 0, "dtype": ar_dtype, "threads": torch.get_num_threads(),
                        "model": _absolute(ar_path), "cache": args.ar_cache, "max_tokens_per_bar": args.ar_max_tokens_per_bar})
                row[f"{kind}_peak_mb"] = mem["peak_delta_bytes"] / 2**20
                row[f"{kind}_process_peak_mb"] = mem["process_peak_bytes"] / 2**20
                row[f"{kind}_peak_exact"] = bool(mem["exact"])
            log(f"  {L} steps: peak memory FractalMIDI {row['fractalmidi_peak_mb']:.1f} MiB, AR {row['ar_peak_mb']:.1f} MiB")
        rows.append(row)

    notes = []
    if not fm_trained:
        notes.append("FractalMIDI is untrained (random weights): the same speed as a trained model of this config, not its music.")
    short = [(r["steps"], made) for r in rows for made in r["ar_bars_made_runs"] if made < r["bars"]]
    if short:
        notes.append(f"The baseline reached its token bound ({args.ar_max_tokens_per_bar} tokens a bar) before "
                     f"beginning all the bars in {len(short)} run(s) ((steps, bars begun): {short}): its times there "
                     "are for fewer bars.")
    notes += _finish(info, cpu_start, wall_start, args)
    return {
        "command": command_line(args),
        "device": device,
        "machine": info,
        "fractalmidi": {
            "source": fm_source, "trained": fm_trained, "parameters": fm_params, "precision": fm_precision,
            "num_iterations": list(fm.generation_config.num_iterations),
            "refine_rounds": fm.generation_config.refine_rounds, "cfg": args.cfg,
        },
        "ar": ar_info,
        "parameter_ratio": ar_info["parameters"] / fm_params,
        "repeats": args.repeats,
        "timing": "median of --repeats runs after a warm-up of each model at each length; generate only",
        "memory": None if args.no_memory else args.memory,
        "memory_method": (
            "not measured (--no-memory)" if args.no_memory else
            "on each model's first timed run at each length (seed 0): " + (
                "torch.cuda.max_memory_allocated() - memory allocated before" if device == "cuda" else
                "peak RSS during generate (VmHWM, reset just before via /proc/self/clear_refs, after gc and "
                "malloc_trim) - RSS before it: generate's working memory; the process peak (interpreter, "
                "libraries, both models' weights and generate) apart") if args.memory == "first-run" else
            "torch.cuda.max_memory_allocated() - memory allocated before, in this process" if device == "cuda" else
            "a fresh subprocess per measurement, after a warm-up: peak RSS during generate (VmHWM, reset just "
            "before via /proc/self/clear_refs) - RSS before it: generate's working memory; the process peak "
            "(interpreter, libraries, weights and generate) apart; the baseline with its cache, not compiled"
        ),
        "rows": rows,
        "notes": notes,
    }


def run_ar_variants(args, log=None) -> dict:
    """The baseline's cache and compile variants (AR_VARIANTS) at the smallest of --lengths:
    a warm-up, then the median of --repeats runs of each. A variant that fails (a compile
    without a working compiler) is a row with its error."""
    import torch

    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    L = check_arguments(args)[0]
    ar_path = check_ar_folder(args.ar_model)
    device = args.device
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine_info(device)
    cpu_start, wall_start = _cpu_seconds(), time.perf_counter()
    ar_dtype = resolve_ar_dtype(args.ar_dtype, resolve_dtype(args.dtype, device), device)
    ar, tokenizer = load_ar(ar_path, device, ar_dtype)
    precision = prepare(ar, device, ar_dtype)
    bars = L // BAR_STEPS
    variants = []
    for name, cache, compile in AR_VARIANTS:
        row = {"variant": name, "cache": cache, "compile": compile}
        config = ar_generation_config(ar, cache, compile, device)
        t0 = time.perf_counter()
        try:
            warm_up_ar(ar, tokenizer, bars, config, args.ar_max_tokens_per_bar)
            row["warmup_seconds"] = time.perf_counter() - t0
            runs = [generate_ar(ar, tokenizer, bars, r, config, args.ar_max_tokens_per_bar) for r in range(args.repeats)]
        except Exception as e:  # noqa: BLE001 - reported, the other variants still measured
            row["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:300]
            log(f"  {name}: failed ({row['error']})")
            variants.append(row)
            continue
        row.update(
            seconds=_median([g.seconds for g in runs]),
            tokens=int(_median([g.tokens[0] for g in runs])),
            passes=int(_median([g.passes for g in runs])),
            seconds_per_token=_median([g.seconds / max(1, g.passes) for g in runs]),
            runs=[g.seconds for g in runs],
            bars_made_runs=[int(g.bars_made[0]) for g in runs],
        )
        log(f"  {name}: {row['seconds']:.3f} s, {row['tokens']} tokens (warm-up {row['warmup_seconds']:.1f} s)")
        variants.append(row)
    done = [v for v in variants if "error" not in v]
    fastest = min(done, key=lambda v: v["seconds"])["variant"] if done else None
    return {
        "command": command_line(args),
        "device": device,
        "machine": info,
        "ar": _ar_info(ar, tokenizer, ar_path, precision, args),
        "steps": L,
        "bars": bars,
        "repeats": args.repeats,
        "timing": f"median of --repeats runs after a warm-up (a run stopped once {AR_WARMUP_SECONDS:g} s have passed "
                  f"and {AR_WARMUP_TOKENS} tokens were made: compiles where compile is on); generate only",
        "variants": variants,
        "fastest": fastest,
        "notes": _finish(info, cpu_start, wall_start, args),
    }


# ----------------------------------------------------------------------------- output
def command_line(args) -> str:
    """The bench command that reproduces this run (the options that were given)."""
    parts = ["python -m benchmarks.bench"]
    for flag, value in (("--model", args.model), ("--config", args.config), ("--threads", args.threads)):
        if value is not None:
            parts.append(f"{flag} {value}")
    parts.append(f"--ar-model {_shown(args.ar_model)}")
    if args.ar_variants:
        parts.append("--ar-variants")
    else:
        parts.append(f"--ar-cache {args.ar_cache} --{'' if args.ar_compile else 'no-'}ar-compile")
    parts.append(f"--ar-max-tokens-per-bar {args.ar_max_tokens_per_bar} --device {args.device} --dtype {args.dtype} "
                 f"--ar-dtype {args.ar_dtype} --lengths {' '.join(map(str, args.lengths))} --repeats {args.repeats}")
    if args.cfg != 1.0:
        parts.append(f"--cfg {args.cfg}")
    if args.no_memory:
        parts.append("--no-memory")
    elif not args.ar_variants and args.memory != DEFAULT_MEMORY:
        parts.append(f"--memory {args.memory}")
    threads = os.environ.get("OMP_NUM_THREADS")
    return (f"OMP_NUM_THREADS={threads} " if threads else "") + " ".join(parts)


def _columns(head: list[str], body: list[list[str]]) -> list[str]:
    """Right-aligned columns under a ruled header."""
    table = [head] + body
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in table]
    return lines[:1] + ["  ".join("-" * w for w in widths)] + lines[1:]


def _header(result: dict) -> list[str]:
    m, ar = result["machine"], result["ar"]
    how = (f"; {ar['cache']} cache" + (", compiled" if ar["compile"] else "")) if ar.get("cache") else ""
    return [
        f"machine: {m['cpu']}, {m['cpu_cores']} cores, torch {m['torch']} with {m['torch_threads']} thread(s)"
        + (f", GPU {m['gpu']}" if "gpu" in m else "") + f"; device {result['device']}",
        f"AR baseline: {ar['source']}; LlamaForCausalLM, {ar['parameters']:,} parameters, {ar['num_layers']} layers x "
        f"{ar['hidden_size']} wide, {ar['num_heads']} heads, REMI vocabulary {ar['vocab_size']}; {ar['precision']}"
        f"{how}; temperature {ar['temperature']}, top-p {ar['top_p']}, at most {ar['max_tokens_per_bar']} tokens a bar",
    ]


def format_table(result: dict) -> str:
    fm = result["fractalmidi"]
    lines = _header(result)
    lines[1:1] = [f"FractalMIDI: {fm['source']}; {fm['parameters']:,} parameters; {fm['precision']}; iterations "
                  f"{fm['num_iterations']}, refine rounds {fm['refine_rounds']}, cfg {fm['cfg']}"]
    lines[2] += f" ({result['parameter_ratio']:.3f}x FractalMIDI's parameters)"
    lines += [f"timing: {result['timing']}; {result['repeats']} repeat(s)", f"memory: {result['memory_method']}", ""]
    head = ["steps", "bars", "FM s", "AR s", "speed-up", "FM passes", "AR passes", "AR tokens", "AR tokens/bar",
            "AR ms/token", "FM peak MiB", "AR peak MiB", "FM music s/s", "AR music s/s"]
    body = []
    for r in result["rows"]:
        mem = lambda k: ("%.1f" % r[k] + ("" if r.get(k.replace("_mb", "_exact"), True) else "*")) if k in r else "-"
        body.append([
            str(r["steps"]), str(r["bars"]), f"{r['fractalmidi_seconds']:.3f}", f"{r['ar_seconds']:.2f}",
            f"{r['speedup']:.1f}x", str(r["fractalmidi_passes"]), str(r["ar_passes"]), str(r["ar_tokens"]),
            f"{r['ar_tokens_per_bar']:.1f}", f"{1000 * r['ar_seconds_per_token']:.2f}",
            mem("fractalmidi_peak_mb"), mem("ar_peak_mb"),
            f"{r['fractalmidi_music_per_second']:.0f}", f"{r['ar_music_per_second']:.1f}",
        ])
    lines += _columns(head, body)
    if any("fractalmidi_process_peak_mb" in r for r in result["rows"]):
        lines.append("process peak RSS MiB (interpreter, weights and generate): " + ", ".join(
            f"{r['steps']}: FM {r['fractalmidi_process_peak_mb']:.0f} / AR {r['ar_process_peak_mb']:.0f}" for r in result["rows"]))
    if any(not r.get(k, True) for r in result["rows"] for k in ("fractalmidi_peak_exact", "ar_peak_exact")):
        lines.append("* the process peak did not rise during generate: an upper bound")
    lines += ["note: " + note for note in result["notes"]]
    return "\n".join(lines)


def format_variants(result: dict) -> str:
    lines = _header(result) + [f"{result['steps']} steps ({result['bars']} bars); timing: {result['timing']}; "
                               f"{result['repeats']} repeat(s)", ""]
    body = []
    for v in result["variants"]:
        if "error" in v:
            body.append([v["variant"], "failed", "-", "-", "-", "-"])
        else:
            body.append([v["variant"], f"{v['seconds']:.2f}", str(v["tokens"]), str(v["passes"]),
                         f"{1000 * v['seconds_per_token']:.2f}", f"{v['warmup_seconds']:.1f}"])
    lines += _columns(["variant", "AR s", "tokens", "passes", "ms/token", "warm-up s"], body)
    lines += [f"{v['variant']} failed: {v['error']}" for v in result["variants"] if "error" in v]
    lines.append(f"fastest: {result['fastest']}" if result["fastest"] else "no variant ran")
    lines += ["note: " + note for note in result["notes"]]
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from benchmarks.baseline import MAX_TOKENS_PER_BAR

    which = p.add_mutually_exclusive_group()
    which.add_argument("--model", metavar="PATH",
                       help=f"FractalMIDI model folder (default: the shipped {_shown(DEFAULT_MODEL)})")
    which.add_argument("--config", metavar="JSON",
                       help="time an untrained FractalMIDI model of this config (e.g. hub_configs/small.json): same speed, random music")
    p.add_argument("--ar-model", metavar="PATH", default=str(DEFAULT_AR_MODEL),
                   help=f"the trained baseline's folder (config.json, model.safetensors, generation_config.json, "
                        f"tokenizer.json; default {_shown(DEFAULT_AR_MODEL)})")
    p.add_argument("--ar-cache", choices=("dynamic", "static"), default=DEFAULT_AR_CACHE,
                   help=f"the baseline's KV cache: transformers' dynamic cache, or its static one, preallocated for "
                        f"the token bound (default {DEFAULT_AR_CACHE}: the faster here, see --ar-variants)")
    p.add_argument("--ar-compile", action=argparse.BooleanOptionalAction, default=DEFAULT_AR_COMPILE,
                   help="compile the baseline's decode step (torch.compile through transformers' compile_config; "
                        f"needs --ar-cache static; default {'on' if DEFAULT_AR_COMPILE else 'off'})")
    p.add_argument("--ar-variants", action="store_true",
                   help="instead: time the baseline's variants (dynamic cache, static cache, static cache + compile) "
                        "at the smallest of --lengths, to choose the default")
    p.add_argument("--ar-max-tokens-per-bar", type=int, default=MAX_TOKENS_PER_BAR, metavar="N",
                   help=f"the baseline's token bound, N x (bars + 1) (default {MAX_TOKENS_PER_BAR}); also the size "
                        "of its static cache")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="default cpu")
    p.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), default="auto",
                   help="FractalMIDI's weights (default auto: float32 on a CPU, where bf16 was slower; bfloat16 on "
                        "CUDA where the GPU supports it)")
    p.add_argument("--ar-dtype", choices=("auto", "float32", "bfloat16"), default="auto",
                   help="the baseline's weights (default auto: float32 on a CPU, --dtype's on CUDA)")
    p.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 4096], metavar="STEPS",
                   help="lengths in grid steps, whole 4/4 bars of 16 steps (default 256 1024 4096)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each model per length; the median is reported (default 3)")
    p.add_argument("--cfg", type=float, default=1.0, help="FractalMIDI's guidance scale (default 1: its default, no guidance)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, which follows OMP_NUM_THREADS)")
    p.add_argument("--memory", choices=("fresh-process", "first-run"), default=DEFAULT_MEMORY,
                   help="how peak memory is measured: fresh-process (default) runs each model once more at each "
                        "length in a new Python process that loads only it; first-run measures each model's first "
                        "timed run in this process (Linux; adds no run: for lengths where a run takes an hour)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
    p.add_argument("--note", action="append", metavar="TEXT", help="a note to print with the results (repeatable)")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")


def cmd_bench(args) -> int:
    if args.ar_variants:
        result = run_ar_variants(args)
        print(json.dumps(result, indent=1) if args.json else format_variants(result))
    else:
        result = run_benchmark(args)
        print(json.dumps(result, indent=1) if args.json else format_table(result))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench",
        description="Batch 1, after a warm-up, the median of --repeats runs: FractalMIDI generate of L steps (L/16 "
                    "bars of 4/4) against the trained autoregressive baseline (transformers' LlamaForCausalLM over "
                    "REMI tokens, sampled by transformers' generate) making the same bars: seconds, ratio, sequential "
                    "passes, the baseline's tokens, peak memory, seconds of music per second.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return cmd_bench(args)
    except (InputError, ValueError) as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--memory-worker":
        print(json.dumps(memory_worker(json.loads(sys.argv[2]))))
        sys.exit(0)
    sys.exit(main())
