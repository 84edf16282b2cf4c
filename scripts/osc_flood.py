"""How fast the OSC server answers valid messages while hostile address patterns arrive (issue 10).

    python scripts/osc_flood.py [--valid 200] [--hostile-rate 300] [--heavy-rate 5000] [--unpaced]

Starts a FractalOSCServer on a free port of 127.0.0.1 (a fake `generate`: no model is loaded),
floods it from another thread with address patterns that make a backtracking matcher
exponential (python-osc's regex took 42 s on the first one), and sends `--valid` messages
`/fractal/param/temperature v` with distinct values, one at a time, 10 ms apart. The latency of
one is the time from its send until `server.params` shows its value (polled every 0.2 ms); a
message not seen within 1 s counts as lost. Prints one table row per scenario:

- no hostile traffic (the baseline);
- hostile patterns at `--hostile-rate` a second, the server's default flood limit (500
  messages a second: hostile and valid together stay under it);
- hostile patterns at `--heavy-rate` a second (10x the default limit) with the flood limit
  lifted, so every hostile datagram is parsed and matched or refused on the server thread;
- with `--unpaced`, hostile patterns as fast as one thread sends them, flood limit lifted, then
  default: more than the server thread can take (see the per-datagram cost below), so the
  kernel drops datagrams from the full socket buffer, valid ones too, and the flood limit drops
  the rest of each flooded second: those valid messages are lost (UDP), not delayed.

Then the cost of deciding one hostile datagram on the server thread, per kind, next to
python-osc's regex matcher on smaller versions of the issue's pattern.
"""

from __future__ import annotations

import argparse
import logging
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_message_builder import OscMessageBuilder

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fractalmidi import Piece  # noqa: E402
from fractalmidi.web.osc import FractalOSCServer, PatternRefused, match_address_pattern  # noqa: E402

ADDRESS_TEXT = "fractal/param/temperature"


def repro_pattern(groups: int = 20) -> str:
    """Issue 10's address: `{c,c,c}` per character of the address ('/' included), then X."""
    return "/" + "".join("{%s,%s,%s}" % (c, c, c) for c in ADDRESS_TEXT[:groups]) + "X"


def per_part_pattern(groups: int = 20) -> str:
    """The same groups kept within their '/'-separated parts (a well-formed pattern), then X."""
    out, n = "", 0
    for part in ADDRESS_TEXT.split("/"):
        out += "/"
        for c in part:
            out += "{%s,%s,%s}" % (c, c, c) if n < groups else c
            n += 1
    return out + "X"


HOSTILE = {
    "issue 10 repro (20 groups, '/' in braces)": repro_pattern(20),
    "20 groups, well formed": per_part_pattern(20),
    "10 groups (within the budget)": per_part_pattern(10),
    "16 wildcards '*t' then X": "/fractal/param/" + "*t" * 16 + "X",
    "256 bytes of '*?'": ("/fractal/param/" + "*?" * 130)[:256],
    "256 bytes of nested '{t,'": ("/fractal/param/" + "{t," * 90)[:256],
    "32 alternatives x 16 wildcards": "/fractal/param/{" + ",".join(["t", "te"] * 15) + "}" + "?*" * 7 + "X",
}


def message(address: str, value: float) -> bytes:
    b = OscMessageBuilder(address=address)
    b.add_arg(value, "f")
    return b.build().dgram


def fake_generate(params) -> Piece:
    return Piece.from_bars([(4, 4)] * params.bars, notes=np.zeros((0, 4), dtype=np.int64))


def flood(stop: threading.Event, address, rate: float | None, counter: list) -> None:
    """Send the hostile datagrams in turn until `stop`: `rate` a second, or unpaced when None."""
    datagrams = [message(p, 0.5) for p in HOSTILE.values()]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        start = time.perf_counter()
        i = 0
        while not stop.is_set():
            try:
                s.sendto(datagrams[i % len(datagrams)], address)
            except OSError:  # a full socket buffer: try again
                time.sleep(0.0005)
                continue
            i += 1
            counter[0] = i
            if rate:
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            elif i % 64 == 0:
                time.sleep(0)  # let the other threads run


def measure(valid: int, hostile_rate: float | None, flooding: bool, max_mps: int, out_dir: Path) -> dict:
    server = FractalOSCServer(fake_generate, port=0, reply_port=_free_port(), out_dir=out_dir,
                              max_messages_per_second=max_mps).start()
    stop = threading.Event()
    sent = [0]
    flooder = None
    if flooding:
        flooder = threading.Thread(target=flood, args=(stop, server.address, hostile_rate, sent), daemon=True)
        flooder.start()
        time.sleep(0.5)  # the flood is under way
    latencies, lost = [], 0
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(valid):
                value = 0.25 + (i % 200) / 128  # exact in float32, 0.25-1.80, each distinct
                t0 = time.perf_counter()
                s.sendto(message("/fractal/param/temperature", value), server.address)
                while time.perf_counter() - t0 < 1.0:
                    if server.params.temperature == value:
                        latencies.append(time.perf_counter() - t0)
                        break
                    time.sleep(0.0002)
                else:
                    lost += 1
                time.sleep(0.01)
    finally:
        stop.set()
        if flooder is not None:
            flooder.join(timeout=5)
        elapsed_hostile = sent[0]
        running = server.running
        server.stop()
    return {"latencies": latencies, "lost": lost, "hostile_sent": elapsed_hostile,
            "dropped": server.dropped_messages, "running": running}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_cost_per_datagram(repeats: int = 200) -> list[tuple[str, float, str]]:
    """Median seconds `_on_datagram` takes on each hostile datagram (no socket), and its outcome."""
    server = FractalOSCServer(fake_generate, port=0, max_messages_per_second=10**9)
    rows = []
    for name, pattern in HOSTILE.items():
        d = message(pattern, 0.5)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            server._on_datagram(d, ("127.0.0.1", 0))
            times.append(time.perf_counter() - t0)
        try:
            matched, work = match_address_pattern(pattern, server.routes)
            outcome = f"matched {len(matched)} addresses, work {work}" + ("" if matched else ": unknown address")
        except PatternRefused as e:
            outcome = f"refused: {e}"
        rows.append((name, statistics.median(times), outcome))
    return rows


def python_osc_cost(groups: int) -> float:
    """Seconds python-osc's Dispatcher takes to match the issue's pattern with `groups` groups."""
    d = Dispatcher()
    for address in ("/fractal/param/temperature", "/fractal/param/cfg", "/fractal/param/bars",
                    "/fractal/latent/level0", "/fractal/latent/level0/clear", "/fractal/generate"):
        d.map(address, print)
    t0 = time.perf_counter()
    list(d.handlers_for_address(repro_pattern(groups)))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--valid", type=int, default=200, help="valid messages per scenario")
    ap.add_argument("--hostile-rate", type=float, default=300.0, help="hostile datagrams a second (paced scenario)")
    ap.add_argument("--heavy-rate", type=float, default=5000.0, help="hostile datagrams a second, flood limit lifted")
    ap.add_argument("--unpaced", action="store_true", help="also flood unpaced (valid messages are lost; slow)")
    ap.add_argument("--out-dir", default="/tmp/osc_flood", help="the server's out_dir (nothing is generated)")
    ap.add_argument("--python-osc-groups", type=int, nargs="*", default=[8, 10, 12],
                    help="group counts to time python-osc's own matcher on (each 2 more is ~9x slower)")
    args = ap.parse_args()
    logging.getLogger("fractalmidi.web.osc").setLevel(logging.ERROR)  # thousands of refusals
    out_dir = Path(args.out_dir)

    scenarios = [
        ("no hostile traffic", None, False, 500),
        (f"hostile {args.hostile_rate:g}/s, default flood limit 500/s", args.hostile_rate, True, 500),
        (f"hostile {args.heavy_rate:g}/s, flood limit lifted", args.heavy_rate, True, 10**9),
    ]
    if args.unpaced:
        scenarios += [
            ("hostile unpaced, flood limit lifted", None, True, 10**9),
            ("hostile unpaced, default flood limit 500/s", None, True, 500),
        ]
    print(f"valid messages: /fractal/param/temperature, {args.valid} per scenario, one at a time, 10 ms apart")
    print(f"{'scenario':<46} {'hostile/s':>9} {'answered':>9} {'lost':>5} {'median ms':>10} {'p95 ms':>8} {'max ms':>8}")
    for name, rate, flooding, max_mps in scenarios:
        t0 = time.perf_counter()
        r = measure(args.valid, rate, flooding, max_mps, out_dir)
        seconds = time.perf_counter() - t0
        lat = sorted(r["latencies"])
        hostile_per_s = r["hostile_sent"] / seconds if flooding else 0
        if lat:
            med, p95, mx = statistics.median(lat), lat[min(len(lat) - 1, int(0.95 * len(lat)))], lat[-1]
            cols = f"{med * 1e3:>10.2f} {p95 * 1e3:>8.2f} {mx * 1e3:>8.2f}"
        else:
            cols = f"{'-':>10} {'-':>8} {'-':>8}"
        print(f"{name:<46} {hostile_per_s:>9.0f} {len(lat):>9} {r['lost']:>5} {cols}"
              + ("" if r["running"] else "  (server thread died!)"))

    print()
    print("cost of one hostile datagram on the server thread (parse, match or refuse, log), median of 200")
    print(f"{'pattern':<42} {'bytes':>5} {'us':>8}  outcome")
    for name, seconds, outcome in server_cost_per_datagram():
        print(f"{name:<42} {len(HOSTILE[name]):>5} {seconds * 1e6:>8.1f}  {outcome[:70]}")
    if args.python_osc_groups:
        print()
        print("python-osc's own matcher (what the server used before) on the issue's pattern")
        for g in args.python_osc_groups:
            print(f"  {g:>2} groups: {python_osc_cost(g) * 1e3:10.1f} ms")


if __name__ == "__main__":
    main()
