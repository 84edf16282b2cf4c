"""`python -m benchmarks.bench` (from the repository root): FractalMIDI `generate` against an autoregressive baseline, same machine, same run.

    python -m benchmarks.bench [--model PATH | --config hub_configs/small.json] [--device cpu|cuda]
                      [--lengths 256 1024 4096] [--repeats 3] [--json]

What is measured (batch 1, one process):
- FractalMIDI: `model.generate(num_bars=L / bar_steps, time_signatures=(4, 4), seed=r)` with the
  model's own defaults (iterations, refinement, cfg 1 unless --cfg): L steps = L/16 bars of 4/4.
- The baseline (`benchmarks/baseline.py`): a decoder-only causal transformer over note-event
  tokens with a KV cache, sampling every token, sized by `ar_config_matching` to FractalMIDI's
  parameter count, making the same number of bars. A trained baseline (`--ar-model PATH`)
  samples until it has opened that many bars ("sampled"). An untrained one cannot be trusted to
  emit Bar tokens, so it is made to produce exactly as many tokens as real music of that many
  bars takes ("forced"): the mean tokens per bar of the dataset (`--data`, encoded with the
  baseline's tokenizer) times the bars. A step costs the same whatever the weights, so the time
  is the time of a trained model making that music.
- Timing: one warm-up run of each model at the smallest length, then for every length
  `--repeats` runs of each (seeds 0, 1, ...), the median reported; wall-clock time of the
  `generate` call alone (`time.perf_counter`, after `torch.cuda.synchronize` on CUDA), under
  `torch.inference_mode()`. Turning the result into notes is not timed.
- Sequential passes: FractalMIDI's `num_forward_passes`; the baseline's is one per token sampled.
- Peak memory: on CPU, every measurement runs once more in a fresh Python subprocess
  (`python -m benchmarks.bench --memory-worker SPEC`) that builds the model, resets its peak
  RSS to its current RSS (Linux: /proc/self/clear_refs), runs `generate` once, and reports the
  peak RSS during it (VmHWM) minus the RSS before: the working memory of generation
  (activations, KV cache, outputs), not the interpreter and weights, which are reported apart
  as the process peak. (tracemalloc does not see torch's allocations; `getrusage`'s ru_maxrss
  cannot be reset and, after fork + exec, starts at the parent's RSS, so it is only the
  fallback where /proc is missing, flagged as an upper bound.) On CUDA,
  `torch.cuda.max_memory_allocated()` minus the memory allocated before, in this process.
- Seconds of music per second of compute: the piece's duration (its tempo per bar) divided by
  the median time. The forced baseline has no real piece: its bars are counted at the duration
  of FractalMIDI's piece of the same length.
- Precision (`--dtype`, `--ar-dtype`): by default FractalMIDI in bf16 on CUDA and on CPUs
  with native bf16 matmuls (AVX-512 BF16 or AMX), else float32; the baseline as FractalMIDI
  on CUDA and in float32 on a CPU (its one-token steps are matrix-vector products, which bf16
  did not speed up there: measured equal); bf16 means the weights in bf16 (or autocast
  where a generate is not dtype-clean). On CUDA, attention through sdpa, or flash_attention_2
  where the flash_attn package is installed.
"""

from __future__ import annotations

import argparse
import contextlib
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
DEFAULT_DATA = (REPO / "data_cache" / "pop909", REPO / "tests" / "data" / "pop909")
WARMUP_SEED = 1000


# ----------------------------------------------------------------------------- models
def _shown(path: Path) -> str:
    """A path relative to the repository when it lies inside it."""
    try:
        return str(Path(path).relative_to(REPO))
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
        return FractalMIDIModel.from_pretrained(path).eval(), f"trained model {path}", True
    path = Path(config_path)
    if not path.is_file():
        raise InputError(f"{path}: no such config file")
    try:
        config = FractalMIDIConfig.from_json_file(str(path))
    except (ValueError, OSError) as e:
        raise InputError(f"{path}: not a FractalMIDI config ({e})") from None
    return FractalMIDIModel(config).eval(), f"untrained model (random weights) of config {path}", False


def load_ar(fractalmidi_model, ar_model_path=None, attention_window: int = 0):
    """(baseline, description, trained): a trained baseline from --ar-model, else an untrained
    one sized to the FractalMIDI model."""
    from benchmarks.baseline import ARBaselineModel, ar_config_matching

    if ar_model_path is not None:
        path = Path(ar_model_path)
        if not (path / "config.json").is_file():
            raise InputError(f"{path}: no baseline model there (expected config.json and model.safetensors)")
        return ARBaselineModel.from_pretrained(path).eval(), f"trained baseline {path}", True
    config = ar_config_matching(fractalmidi_model, attention_window=attention_window)
    return ARBaselineModel(config).eval(), "untrained baseline (random weights) sized by ar_config_matching", False


def _load_pieces(data):
    """Pieces of a built dataset folder, or of a folder of MIDI files (POP909 beat files used)."""
    path = Path(data)
    if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
        from fractalmidi.data import load_dataset_dir, row_to_piece

        return [row_to_piece(r) for r in load_dataset_dir(path)]
    from fractalmidi.midi_io import find_midi_files, read_midi

    files = find_midi_files(path)
    if not files:
        raise InputError(f"{path}: neither a dataset built by `fractalmidi build-dataset` nor a folder of MIDI files")
    return [read_midi(midi, beats=beats)[0] for midi, beats in files]


def measure_tokens_per_bar(tokenizer, data=None) -> dict:
    """Tokens per bar of real music under the baseline's tokenizer (`baseline.tokens_per_bar`),
    from `data` or the first of DEFAULT_DATA that exists; the source is recorded."""
    from benchmarks.baseline import tokens_per_bar

    candidates = [Path(data)] if data is not None else [p for p in DEFAULT_DATA if p.exists()]
    if not candidates or not candidates[0].exists():
        raise InputError(f"no data to count tokens per bar on: give --data (tried {', '.join(map(str, candidates or DEFAULT_DATA))})")
    pieces = []
    for piece in _load_pieces(candidates[0]):
        try:
            tokenizer.check(piece)
        except ValueError:  # a bar or pitch the vocabulary cannot hold: not counted
            continue
        pieces.append(piece)
    stats = tokens_per_bar(pieces, tokenizer)
    stats["source"] = str(candidates[0])
    return stats


# ----------------------------------------------------------------------------- precision
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 matmuls natively (AVX-512 BF16 or AMX), i.e. gains from it."""
    import torch

    with contextlib.suppress(Exception):
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def resolve_dtype(dtype: str, device: str) -> str:
    """"auto" -> "bfloat16" on CUDA and on CPUs with native bf16, else "float32"."""
    if dtype != "auto":
        return dtype
    if device == "cuda":
        return "bfloat16"
    return "bfloat16" if cpu_has_native_bf16() else "float32"


def resolve_ar_dtype(ar_dtype: str, dtype: str, device: str) -> str:
    """The baseline's precision: "auto" -> FractalMIDI's on CUDA; float32 on a CPU, where bf16
    gained its one-token steps (matrix-vector products) nothing (5.39 s against 5.42 s for 256
    steps on this 2-core CPU: README, Speed) and float32 keeps its weights exact."""
    if ar_dtype != "auto":
        return ar_dtype
    return dtype if device == "cuda" else "float32"


def prepare(model, kind: str, device: str, dtype: str = "float32"):
    """Move a model to the device and dtype; on CUDA choose the attention kernel. Returns
    (model, context factory for generate, description)."""
    import torch

    model = model.to(device)
    impl = model.config._attn_implementation or "sdpa"
    if device == "cuda":
        from transformers.utils import is_flash_attn_2_available

        impl = "flash_attention_2" if is_flash_attn_2_available() else "sdpa"
        with contextlib.suppress(Exception):
            model.set_attn_implementation(impl)
        impl = model.config._attn_implementation or impl
    if dtype == "float32":
        return model, contextlib.nullcontext, f"float32, attention {impl}"
    import copy

    bf16 = copy.deepcopy(model).to(torch.bfloat16)  # a copy: the fp32 weights stay exact for autocast
    try:
        _generate(bf16, kind, 1, 4, 0, contextlib.nullcontext, 1.0)
        return bf16, contextlib.nullcontext, f"bfloat16 weights, attention {impl}"
    except RuntimeError:  # generate is not dtype-clean in bf16: autocast instead
        del bf16
        return model, (lambda: torch.autocast(device, dtype=torch.bfloat16)), f"float32 weights under bf16 autocast, attention {impl}"


def _generate(model, kind: str, bars: int, tokens: int | None, seed: int, context, cfg: float):
    import torch

    with torch.inference_mode(), context():
        if kind == "fractalmidi":
            return model.generate(num_bars=bars, time_signatures=(4, 4), seed=seed, guidance_scale=cfg)
        if tokens is not None:
            return model.generate(num_tokens=tokens, seed=seed)
        return model.generate(num_bars=bars, max_new_tokens=model.config.max_position_embeddings - 1, seed=seed)


def _sync(device: str):
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def timed(model, kind, bars, tokens, seed, context, cfg, device):
    """(seconds, result) of one generate call."""
    _sync(device)
    t0 = time.perf_counter()
    result = _generate(model, kind, bars, tokens, seed, context, cfg)
    _sync(device)
    return time.perf_counter() - t0, result


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


def memory_worker(spec: dict) -> dict:
    """Run in a fresh process: build the model of `spec`, run generate once, and report the
    peak resident memory during generate above the resident memory before it.

    On Linux the peak is reset just before generate (/proc/self/clear_refs), so the peak
    after it (VmHWM, which `getrusage` reports as ru_maxrss) is generate's own: exact. Where
    that is not possible, the peak since the process started is used: an upper bound
    (`exact` false) when imports or the model's construction peaked higher."""
    import torch

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    torch.set_grad_enabled(False)
    if spec["kind"] == "fractalmidi":
        from fractalmidi import FractalMIDIConfig, FractalMIDIModel

        if spec.get("model"):
            model = FractalMIDIModel.from_pretrained(spec["model"]).eval()
        else:
            model = FractalMIDIModel(FractalMIDIConfig.from_json_file(spec["config"])).eval()
    else:
        from benchmarks.baseline import ARBaselineConfig, ARBaselineModel

        if spec.get("model"):
            model = ARBaselineModel.from_pretrained(spec["model"]).eval()
        else:
            model = ARBaselineModel(ARBaselineConfig(**spec["config"])).eval()
    model, context, _ = prepare(model, spec["kind"], "cpu", spec.get("dtype", "float32"))
    import gc

    gc.collect()
    # (ru_maxrss also holds the parent's RSS at fork, which exec keeps: VmHWM is this image's own)
    startup_peak = _status_bytes("VmHWM") or 0
    reset = _reset_peak_rss()
    before = _status_bytes("VmRSS")
    peak_before = _status_bytes("VmHWM") if reset else _maxrss_bytes()
    result = _generate(model, spec["kind"], spec["bars"], spec.get("tokens"), spec["seed"], context, spec["cfg"])
    peak = max(_status_bytes("VmHWM") or 0, _maxrss_bytes() if not reset else 0)
    base = before if before is not None else peak_before
    return {
        "peak_delta_bytes": max(peak - base, 0),
        "exact": reset or peak > peak_before,
        "process_peak_bytes": max(startup_peak, peak),
        "rss_before_bytes": base,
        "passes": int(result.num_forward_passes),
    }


def peak_memory_subprocess(spec: dict) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.bench", "--memory-worker", json.dumps(spec)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    if out.returncode != 0:
        raise RuntimeError(f"memory measurement failed: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def peak_memory_cuda(model, kind, bars, tokens, seed, context, cfg) -> dict:
    import torch

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    _generate(model, kind, bars, tokens, seed, context, cfg)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    return {"peak_delta_bytes": peak - before, "exact": True, "process_peak_bytes": peak, "rss_before_bytes": before}


# ----------------------------------------------------------------------------- the run
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


def run_benchmark(args, log=None) -> dict:
    """The whole benchmark (see the module docstring); returns the JSON-able result."""
    import torch

    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: CUDA is not available here")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.repeats < 1:
        raise InputError(f"--repeats must be at least 1, got {args.repeats}")
    info = machine_info(device)
    cpu_start, wall_start = _cpu_seconds(), time.perf_counter()

    fm, fm_source, fm_trained = load_fractalmidi(args.model, args.config)
    bar_steps = 4 * fm.config.steps_per_beat  # a bar of 4/4
    lengths = sorted(set(args.lengths))
    for L in lengths:
        if L < bar_steps or L % bar_steps:
            raise InputError(f"--lengths: {L} is not a whole number of 4/4 bars ({bar_steps} steps each)")
    ar, ar_source, ar_trained = load_ar(fm, args.ar_model, args.ar_window)
    from benchmarks.baseline import count_parameters

    fm_params, ar_params = count_parameters(fm), count_parameters(ar)
    tpb = measure_tokens_per_bar(ar.tokenizer, args.data)
    mode = "sampled" if ar_trained else "forced"
    log(f"FractalMIDI: {fm_source}, {fm_params:,} parameters; baseline: {ar_source}, {ar_params:,} parameters "
        f"({ar.config.num_layers} layers x {ar.config.hidden_size}); tokens per bar {tpb['mean']:.1f} ({tpb['source']})")

    dtype = resolve_dtype(args.dtype, device)
    ar_dtype = resolve_ar_dtype(args.ar_dtype, dtype, device)
    fm, fm_ctx, fm_precision = prepare(fm, "fractalmidi", device, dtype)
    ar, ar_ctx, ar_precision = prepare(ar, "ar", device, ar_dtype)

    def tokens_for(bars):
        return int(round(tpb["mean"] * bars)) if mode == "forced" else None

    # warm-up: one run of each at the smallest length
    b0 = lengths[0] // bar_steps
    timed(fm, "fractalmidi", b0, None, WARMUP_SEED, fm_ctx, args.cfg, device)
    timed(ar, "ar", b0, tokens_for(b0), WARMUP_SEED, ar_ctx, args.cfg, device)

    rows = []
    for L in lengths:
        bars = L // bar_steps
        tokens = tokens_for(bars)
        fm_times, ar_times, ar_tokens, ar_stops = [], [], [], []
        fm_result = None
        for r in range(args.repeats):
            t, res = timed(fm, "fractalmidi", bars, None, r, fm_ctx, args.cfg, device)
            fm_times.append(t)
            fm_result = fm_result or res
            log(f"  {L} steps, run {r + 1}/{args.repeats}: FractalMIDI {t:.3f} s")
        for r in range(args.repeats):
            t, res = timed(ar, "ar", bars, tokens, r, ar_ctx, args.cfg, device)
            ar_times.append(t)
            ar_tokens.append(res.num_sampled)
            ar_stops.append(res.stopped_by)
            log(f"  {L} steps, run {r + 1}/{args.repeats}: AR {t:.3f} s, {res.num_sampled} tokens ({res.stopped_by})")
        fm_piece = fm_result.to_piece()
        music = fm_piece.duration_seconds
        ar_music = music if mode == "forced" else res.to_piece().duration_seconds
        row = {
            "steps": L,
            "bars": bars,
            "fractalmidi_seconds": _median(fm_times),
            "ar_seconds": _median(ar_times),
            "ar_tokens": int(_median(ar_tokens)),
            "fractalmidi_passes": int(fm_result.num_forward_passes),
            "ar_passes": int(_median(ar_tokens)),
            "fractalmidi_runs": fm_times,
            "ar_runs": ar_times,
            "ar_tokens_runs": ar_tokens,
            "ar_stopped_by": ar_stops,
            "music_seconds": music,
            "ar_music_seconds": ar_music,
            "fractalmidi_notes": int(len(fm_piece.notes)),
        }
        row["speedup"] = row["ar_seconds"] / row["fractalmidi_seconds"]
        row["fractalmidi_music_per_second"] = music / row["fractalmidi_seconds"]
        row["ar_music_per_second"] = ar_music / row["ar_seconds"]
        if not args.no_memory:
            for kind, model in (("fractalmidi", fm), ("ar", ar)):
                if device == "cuda":
                    ctx = fm_ctx if kind == "fractalmidi" else ar_ctx
                    mem = peak_memory_cuda(model, kind, bars, tokens if kind == "ar" else None, 0, ctx, args.cfg)
                else:
                    spec = {"kind": kind, "bars": bars, "tokens": tokens if kind == "ar" else None, "seed": 0,
                            "cfg": args.cfg, "threads": torch.get_num_threads(),
                            "dtype": dtype if kind == "fractalmidi" else ar_dtype}
                    if kind == "fractalmidi":
                        spec.update(model=str(args.model or DEFAULT_MODEL) if fm_trained else None, config=args.config)
                    else:
                        spec.update(model=args.ar_model, config=None if ar_trained else ar.config.to_diff_dict())
                    mem = peak_memory_subprocess(spec)
                row[f"{kind}_peak_mb"] = mem["peak_delta_bytes"] / 2**20
                row[f"{kind}_process_peak_mb"] = mem["process_peak_bytes"] / 2**20
                row[f"{kind}_peak_exact"] = bool(mem["exact"])
            log(f"  {L} steps: peak memory FractalMIDI {row['fractalmidi_peak_mb']:.1f} MiB, AR {row['ar_peak_mb']:.1f} MiB")
        rows.append(row)

    with contextlib.suppress(OSError, AttributeError):
        info["load_average_at_end"] = round(os.getloadavg()[0], 2)
    notes = []
    if not fm_trained:
        notes.append("FractalMIDI is untrained (random weights): the same speed as a trained model of this config, not its music.")
    if mode == "forced":
        notes.append(f"The baseline is untrained, so it was made to sample exactly round({tpb['mean']:.1f} tokens per bar x bars) "
                     f"tokens, the tokens per bar of real music ({tpb['source']}, {tpb['bars']} bars); its music seconds "
                     "are FractalMIDI's piece's duration for the same bars.")
    short = [(r["steps"], stop) for r in rows for stop in r["ar_stopped_by"] if mode == "sampled" and stop != "bars"]
    if short:
        notes.append(f"The baseline stopped before making all the bars in {len(short)} run(s) ({short}): its times there "
                     "are for less music.")
    other = other_work_note(info, cpu_start, time.perf_counter() - wall_start, torch.get_num_threads())
    if other is not None:
        notes.append(other)
    notes += list(args.note or [])
    return {
        "command": command_line(args),
        "device": device,
        "machine": info,
        "fractalmidi": {
            "source": fm_source, "trained": fm_trained, "parameters": fm_params, "precision": fm_precision,
            "num_iterations": list(fm.generation_config.num_iterations), "refine_rounds": fm.generation_config.refine_rounds, "cfg": args.cfg,
        },
        "ar": {
            "source": ar_source, "trained": ar_trained, "parameters": ar_params, "precision": ar_precision, "mode": mode,
            "num_layers": ar.config.num_layers, "hidden_size": ar.config.hidden_size, "num_heads": ar.config.num_heads,
            "attention_window": ar.config.attention_window, "vocab_size": ar.tokenizer.vocab_size,
            "kv_cache": "per-layer key/value tensors, preallocated, one token fed per step",
        },
        "parameter_ratio": ar_params / fm_params,
        "tokens_per_bar": tpb,
        "repeats": args.repeats,
        "timing": "median of --repeats runs after one warm-up run of each model at the smallest length; generate only",
        "memory_method": (
            "not measured (--no-memory)" if args.no_memory else
            "torch.cuda.max_memory_allocated() - memory allocated before, in this process" if device == "cuda" else
            "a fresh subprocess per measurement: peak RSS during generate (VmHWM, reset just before via "
            "/proc/self/clear_refs) - RSS before it: generate's working memory; the process peak "
            "(interpreter, libraries, weights and generate) apart"
        ),
        "rows": rows,
        "notes": notes,
    }


# ----------------------------------------------------------------------------- output
def command_line(args) -> str:
    """The bench command that reproduces this run (the options that were given)."""
    parts = ["python -m benchmarks.bench"]
    for flag, value in (("--model", args.model), ("--config", args.config), ("--ar-model", args.ar_model),
                        ("--data", args.data), ("--threads", args.threads)):
        if value is not None:
            parts.append(f"{flag} {value}")
    parts.append(f"--device {args.device} --dtype {args.dtype} --ar-dtype {args.ar_dtype} --lengths {' '.join(map(str, args.lengths))} --repeats {args.repeats}")
    if args.cfg != 1.0:
        parts.append(f"--cfg {args.cfg}")
    if args.ar_window:
        parts.append(f"--ar-window {args.ar_window}")
    if args.no_memory:
        parts.append("--no-memory")
    threads = os.environ.get("OMP_NUM_THREADS")
    return (f"OMP_NUM_THREADS={threads} " if threads else "") + " ".join(parts)


def format_table(result: dict) -> str:
    fm, ar = result["fractalmidi"], result["ar"]
    m = result["machine"]
    lines = [
        f"machine: {m['cpu']}, {m['cpu_cores']} cores, torch {m['torch']} with {m['torch_threads']} thread(s)"
        + (f", GPU {m['gpu']}" if "gpu" in m else "") + f"; device {result['device']}",
        f"FractalMIDI: {fm['source']}; {fm['parameters']:,} parameters; {fm['precision']}; iterations "
        f"{fm['num_iterations']}, refine rounds {fm['refine_rounds']}, cfg {fm['cfg']}",
        f"AR baseline: {ar['source']}; {ar['parameters']:,} parameters ({result['parameter_ratio']:.3f}x); "
        f"{ar['num_layers']} layers x {ar['hidden_size']} wide, {ar['num_heads']} heads, vocabulary {ar['vocab_size']}, "
        f"{'full causal attention' if not ar['attention_window'] else 'window of %d tokens' % ar['attention_window']}, "
        f"KV cache; tokens {ar['mode']}",
        f"tokens per bar of real music: {result['tokens_per_bar']['mean']:.1f} (mean over {result['tokens_per_bar']['bars']} "
        f"bars of {result['tokens_per_bar']['source']})",
        f"timing: {result['timing']}; {result['repeats']} repeat(s)",
        f"memory: {result['memory_method']}",
        "",
    ]
    head = ["steps", "bars", "FM s", "AR s", "AR tokens", "speed-up", "FM passes", "AR passes",
            "FM peak MiB", "AR peak MiB", "FM music s/s", "AR music s/s"]
    table = [head]
    for r in result["rows"]:
        mem = lambda k: ("%.1f" % r[k] + ("" if r.get(k.replace("_mb", "_exact"), True) else "*")) if k in r else "-"
        table.append([
            str(r["steps"]), str(r["bars"]), f"{r['fractalmidi_seconds']:.3f}", f"{r['ar_seconds']:.2f}",
            str(r["ar_tokens"]), f"{r['speedup']:.1f}x", str(r["fractalmidi_passes"]), str(r["ar_passes"]),
            mem("fractalmidi_peak_mb"), mem("ar_peak_mb"),
            f"{r['fractalmidi_music_per_second']:.0f}", f"{r['ar_music_per_second']:.1f}",
        ])
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    for i, row in enumerate(table):
        lines.append("  ".join(c.rjust(w) for c, w in zip(row, widths)))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    if any("fractalmidi_process_peak_mb" in r for r in result["rows"]):
        lines.append("process peak RSS MiB (interpreter, weights and generate): " + ", ".join(
            f"{r['steps']}: FM {r['fractalmidi_process_peak_mb']:.0f} / AR {r['ar_process_peak_mb']:.0f}" for r in result["rows"]))
    if any(not r.get(k, True) for r in result["rows"] for k in ("fractalmidi_peak_exact", "ar_peak_exact")):
        lines.append("* the process peak did not rise during generate: an upper bound")
    for note in result["notes"]:
        lines.append("note: " + note)
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    which = p.add_mutually_exclusive_group()
    which.add_argument("--model", metavar="PATH",
                       help=f"FractalMIDI model folder (default: {_shown(DEFAULT_MODEL)} when present)")
    which.add_argument("--config", metavar="JSON",
                       help="time an untrained FractalMIDI model of this config (e.g. hub_configs/small.json): same speed, random music")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="default cpu")
    p.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), default="auto",
                   help="FractalMIDI's weights (default auto: bfloat16 on CUDA and on CPUs with native bf16 "
                        "(AVX-512 BF16 / AMX), else float32)")
    p.add_argument("--ar-dtype", choices=("auto", "float32", "bfloat16"), default="auto",
                   help="the baseline's weights (default auto: --dtype's on CUDA, float32 on a CPU, where bf16 "
                        "did not speed up its one-token steps)")
    p.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 4096], metavar="STEPS",
                   help="lengths in grid steps, whole 4/4 bars (default 256 1024 4096)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each model per length; the median is reported (default 3)")
    p.add_argument("--cfg", type=float, default=1.0, help="FractalMIDI's guidance scale (default 1: its default, no guidance)")
    p.add_argument("--ar-model", metavar="PATH", help="a trained baseline (ARBaselineModel.save_pretrained folder): samples until the bars are made")
    p.add_argument("--ar-window", type=int, default=0, metavar="N",
                   help="untrained baseline only: sliding attention window in tokens (default 0: full causal attention)")
    p.add_argument("--data", metavar="PATH",
                   help="dataset folder or MIDI folder to count tokens per bar on (default data_cache/pop909, else tests/data/pop909)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, which follows OMP_NUM_THREADS)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
    p.add_argument("--note", action="append", metavar="TEXT", help="a note to print with the results (repeatable)")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")


def cmd_bench(args) -> int:
    result = run_benchmark(args)
    print(json.dumps(result, indent=1) if args.json else format_table(result))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench",
        description="Batch 1, after a warm-up, the median of --repeats runs: FractalMIDI generate of L steps (L/16 "
                    "bars of 4/4) against a causal transformer over note-event tokens (KV cache, sampling every token, "
                    "as many parameters) making the same bars: seconds, ratio, sequential passes, peak memory, "
                    "seconds of music per second.")
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
