"""The OSC performance server: drive generation live from TouchDesigner, Max, a phone ...

    server = FractalOSCServer(generate, port=5005, reply_port=5006).start()
    ...
    server.stop()

`generate(params: OSCParams) -> Piece` is the caller's (`app.py` wraps the model in it). The
server listens for OSC over UDP on 127.0.0.1:5005 by default (this machine only; pass
`host="0.0.0.0"` to let other machines in), keeps the performance parameters in range, and
runs generations one at a time on a worker thread. Each result is written as a MIDI file to
`out_dir` (`fractal_YYYYmmdd-HHMMSS_NNN.mid`) and sent, with its notes, to the reply address.

Messages in (to host:port)

| address | arguments | effect |
|---|---|---|
| `/fractal/param/temperature` | `f` 0.1-2.0 | sampling temperature |
| `/fractal/param/cfg` | `f` 0.0-10.0 | classifier-free guidance scale |
| `/fractal/param/bars` | `i` 1-256 (a whole float such as 16.0 is accepted) | bars per generation |
| `/fractal/latent/level0` | `f f f ...` 1-1024 values, each 0.0-4.0 | per-bar density shape (onsets per step, 1.0 = one onset per 16th note), resampled linearly to the bar count at each generation and kept by Level 0 |
| `/fractal/latent/level0/clear` | none | forget the shape (the model chooses the density) |
| `/fractal/generate` | none (any arguments are ignored) | queue a generation with a snapshot of the current parameters |

Messages out (to reply_host:reply_port), after each generation, in this order

| address | arguments | meaning |
|---|---|---|
| `/fractal/result/path` | `s` | absolute path of the MIDI file written |
| `/fractal/result/bars` | `i` | number of bars |
| `/fractal/result/notes` | `i` | number of notes; that many `/fractal/note` follow |
| `/fractal/note` | `i i f f i` | pitch (MIDI), velocity (1-127), start (seconds), duration (seconds), start step (a 16th note at the default 4 steps per beat); one per note, in time order, 0.5 ms apart |
| `/fractal/result/done` | `i` | number of notes again: the result is complete |
| `/fractal/error` | `s` | a generation failed, or a `/fractal/generate` was refused (busy) |

Rules
- Integers are accepted where a float is expected (`i`, `h`, `f`, `d`). Strings, blobs,
  booleans, NaN / inf, values out of range, wrong argument counts and unknown addresses are
  refused: the parameter keeps its value and the reason is logged (logger `fractalmidi.osc`
  at WARNING, and `FractalOSCServer.log`; past 50 refusals in one second they are counted,
  not logged one by one).
- More than `max_messages_per_second` messages in one second (a flood): the rest of that
  second is dropped, logged once.
- A `/fractal/generate` that arrives while `max_queue` requests already wait is refused (busy).
- OSC address patterns work (`/fractal/param/{temperature,cfg} f 1.0`), with at most 4 `*`
  (python-osc's matching is exponential in them); bundles are applied at once (their time
  tags are ignored) and count as the messages they hold; a datagram over 8192 bytes (python-osc's
  receive size) arrives cut and is refused.
- UDP drops packets in unpaced bursts: a sender should pace bursts (about 0.5 ms apart).
"""

from __future__ import annotations

import collections
import copy
import logging
import math
import queue
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from pythonosc import osc_packet
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_server import BlockingOSCUDPServer
from pythonosc.udp_client import SimpleUDPClient

from .midi_io import write_midi
from .piece import Piece

logger = logging.getLogger("fractalmidi.osc")

# the allowed range of each parameter (inclusive)
TEMPERATURE_RANGE = (0.1, 2.0)
CFG_RANGE = (0.0, 10.0)
BARS_RANGE = (1, 256)
LEVEL0_RANGE = (0.0, 4.0)  # onsets per step
LEVEL0_MAX_VALUES = 1024
_PARAM_RANGES = {"temperature": TEMPERATURE_RANGE, "cfg": CFG_RANGE, "bars": BARS_RANGE}

NOTE_INTERVAL_S = 0.0005  # pause between /fractal/note messages, so UDP does not drop them
REFUSALS_LOGGED_PER_SECOND = 50  # further refusals in the same second are only counted
MAX_PATTERN_WILDCARDS = 4  # '*' in an incoming address pattern; more can make matching exponential
MAX_ADDRESS_LENGTH = 256


@dataclass
class OSCParams:
    """The current performance parameters (always in range)."""

    temperature: float = 0.8  # sampling temperature, 0.1-2.0 (the shipped model's default)
    cfg: float = 1.0  # classifier-free guidance scale, 0.0-10.0
    level0: list[float] | None = None  # per-bar density shape (onsets per step, each 0-4), or None
    bars: int = 16  # bars per generation, 1-256


def resample_level0(values, bars: int) -> list[float]:
    """A density shape of any length stretched to `bars` values (linear interpolation), clipped to 0-4."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(v) == 1:
        out = np.full(bars, v[0])
    else:
        # position of each bar on the shape's own axis 0 .. len-1
        out = np.interp(np.linspace(0.0, len(v) - 1, bars), np.arange(len(v)), v)
    return np.clip(out, *LEVEL0_RANGE).tolist()


class _Refused(Exception):
    """A message that was not applied; the text is the reason."""


def _describe(arg) -> str:
    if isinstance(arg, bool):
        return "a boolean"
    if isinstance(arg, str):
        return "a string"
    if isinstance(arg, (bytes, bytearray)):
        return "a blob"
    if arg is None:
        return "nil"
    return f"a {type(arg).__name__}"


def _number(arg) -> float:
    """An OSC int or float argument as a finite float; anything else is refused."""
    if isinstance(arg, bool) or not isinstance(arg, (int, float)):
        raise _Refused(f"expects a number, got {_describe(arg)}")
    if not math.isfinite(arg):
        raise _Refused(f"expects a finite number, got {arg}")
    return float(arg)


class _UDPServer(BlockingOSCUDPServer):
    """python-osc's UDP server with every datagram handed to the owner (rate limits, refusals)."""

    def __init__(self, address, owner: "FractalOSCServer"):
        self.owner = owner
        super().__init__(address, owner.dispatcher)

    def verify_request(self, request, client_address) -> bool:
        return True  # malformed datagrams are refused (and counted) by the owner

    def finish_request(self, request, client_address):
        self.owner._on_datagram(request[0], client_address)

    def handle_error(self, request, client_address):
        logger.exception("unexpected error handling a datagram from %s (server keeps running)", client_address)


class FractalOSCServer:
    """The OSC server thread and the generation worker thread (see the module docstring).

    Args:
        generate: `generate(params) -> Piece`, called on the worker thread, one call at a time.
        host, port: where to listen (port 0 picks a free port; see `address`).
        reply_host, reply_port: where results, notes and errors are sent.
        out_dir: folder for the MIDI files (created when needed).
        on_result: optional `on_result(path, piece)`, called on the worker thread after each result.
        max_queue: generation requests that may wait while one runs; more are refused (busy).
        max_messages_per_second: incoming messages handled per second; the rest are dropped.
    """

    def __init__(
        self,
        generate: Callable[[OSCParams], Piece],
        host: str = "127.0.0.1",
        port: int = 5005,
        reply_host: str = "127.0.0.1",
        reply_port: int = 5006,
        out_dir="outputs/osc",
        on_result: Callable[[Path, Piece], None] | None = None,
        max_queue: int = 4,
        max_messages_per_second: int = 500,
    ):
        if max_queue < 1 or max_messages_per_second < 1:
            raise ValueError("max_queue and max_messages_per_second must be at least 1")
        self.generate = generate
        self.host, self.port = host, int(port)
        self.reply_host, self.reply_port = reply_host, int(reply_port)
        self.out_dir = Path(out_dir)
        self.on_result = on_result
        self.max_queue = int(max_queue)
        self.max_messages_per_second = int(max_messages_per_second)

        self.last_result: tuple[Path, Piece] | None = None
        self.log: collections.deque = collections.deque(maxlen=500)  # (time, level, message)
        self.dropped_messages = 0  # total dropped by the flood limit

        self._params = OSCParams()
        self._params_lock = threading.Lock()
        self._jobs: queue.Queue = queue.Queue(maxsize=self.max_queue)
        self._stop = threading.Event()
        self._reply = SimpleUDPClient(reply_host, self.reply_port)
        self._reply_lock = threading.Lock()
        self._file_counter = 0
        self._server: _UDPServer | None = None
        self._server_thread: threading.Thread | None = None
        self._worker_thread: threading.Thread | None = None
        # one-second windows, touched only by the server thread
        self._window_start = 0.0
        self._window_messages = 0
        self._window_refusals = 0
        self._unlogged_refusals = 0

        self.dispatcher = Dispatcher()
        for name in _PARAM_RANGES:
            self.dispatcher.map(f"/fractal/param/{name}", self._on_param, name)
        self.dispatcher.map("/fractal/latent/level0", self._on_level0)
        self.dispatcher.map("/fractal/latent/level0/clear", self._on_level0_clear)
        self.dispatcher.map("/fractal/generate", self._on_generate)
        self.dispatcher.set_default_handler(self._on_unknown)

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> "FractalOSCServer":
        """Bind (raises OSError if the port is taken), start the server and worker threads."""
        if self._server is not None:
            raise RuntimeError("the OSC server is already started")
        self._stop = threading.Event()  # a fresh one, so a worker left from an earlier run still stops
        self._server = _UDPServer((self.host, self.port), self)
        try:  # a larger receive buffer loses fewer packets in bursts (the kernel may cap it)
            self._server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        except OSError:
            pass
        self._server_thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="fractal-osc-server", daemon=True
        )
        self._worker_thread = threading.Thread(
            target=self._work, args=(self._stop,), name="fractal-osc-worker", daemon=True
        )
        self._server_thread.start()
        self._worker_thread.start()
        host, port = self.address
        self._note("INFO", f"listening for OSC on {host}:{port}, replies to {self.reply_host}:{self.reply_port}")
        return self

    def stop(self) -> None:
        """Stop listening and stop the worker; waiting requests are dropped, a generation in
        progress is not interrupted (its result is still written and sent)."""
        if self._server is None:
            return
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        try:
            while True:
                self._jobs.get_nowait()
        except queue.Empty:
            pass
        self._server_thread.join(timeout=5)
        self._worker_thread.join(timeout=5)
        self._server = None
        self._note("INFO", "OSC server stopped")

    def __enter__(self) -> "FractalOSCServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """True while both the server thread and the worker thread are alive."""
        threads = (self._server_thread, self._worker_thread)
        return self._server is not None and all(t is not None and t.is_alive() for t in threads)

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port) once started (the real port when 0 was asked), else the configured one."""
        if self._server is not None:
            host, port = self._server.server_address[:2]
            return host, port
        return self.host, self.port

    @property
    def params(self) -> OSCParams:
        """A copy of the current parameters."""
        with self._params_lock:
            return copy.deepcopy(self._params)

    @property
    def queued(self) -> int:
        """Generation requests waiting (not counting the one running)."""
        return self._jobs.qsize()

    # ----------------------------------------------------------------- logging
    def _note(self, level: str, message: str) -> None:
        logger.log(getattr(logging, level), message)
        self.log.append((time.time(), level, message))

    def _refuse(self, address: str, args, reason: str) -> None:
        """Log a refused message, at most REFUSALS_LOGGED_PER_SECOND a second (the rest are counted)."""
        self._window_refusals += 1
        if self._window_refusals > REFUSALS_LOGGED_PER_SECOND:
            self._unlogged_refusals += 1
            return
        shown = ", ".join(repr(a) for a in args[:4]) + (", ..." if len(args) > 4 else "")
        self._note("WARNING", f"refused {address}{f' ({shown})' if args else ''}: {reason}")

    def _next_window(self, now: float) -> None:
        if self._unlogged_refusals:
            self._note("WARNING", f"{self._unlogged_refusals} more refusals in the last second were not logged")
        self._window_start, self._window_messages = now, 0
        self._window_refusals = self._unlogged_refusals = 0

    def _admit(self) -> bool:
        """Count one incoming message; False once this second's budget is spent (a flood)."""
        now = time.monotonic()
        if now - self._window_start >= 1.0:
            self._next_window(now)
        self._window_messages += 1
        if self._window_messages <= self.max_messages_per_second:
            return True
        self.dropped_messages += 1
        if self._window_messages == self.max_messages_per_second + 1:
            self._note(
                "WARNING",
                f"flood: more than {self.max_messages_per_second} messages in one second; "
                "dropping the rest of this second",
            )
        return False

    # ----------------------------------------------------------------- incoming (server thread)
    def _on_datagram(self, data: bytes, client_address) -> None:
        """One UDP datagram: a message or a bundle of them. Nothing here may raise."""
        if not self._admit():
            return
        try:
            messages = [m.message for m in osc_packet.OscPacket(data).messages]
        except Exception as e:  # ParseError, or a RecursionError from absurdly nested bundles
            self._refuse(f"a datagram from {client_address[0]}", [], f"not a valid OSC packet ({len(data)} bytes, {type(e).__name__})")
            return
        for i, msg in enumerate(messages):
            if i and not self._admit():  # a bundle counts as the messages it holds
                return
            address = msg.address
            if len(address) > MAX_ADDRESS_LENGTH or address.count("*") > MAX_PATTERN_WILDCARDS:
                self._refuse(
                    address[:64], msg.params,
                    f"address pattern too long or with more than {MAX_PATTERN_WILDCARDS} '*'",
                )
                continue
            for handler in list(self.dispatcher.handlers_for_address(address)):
                try:
                    handler.invoke(client_address, msg)
                except _Refused as r:
                    self._refuse(address, msg.params, str(r))
                except Exception:
                    logger.exception("error handling %s (server keeps running)", address)

    def _on_param(self, address, fixed, *args) -> None:
        name = fixed[0]
        lo, hi = _PARAM_RANGES[name]
        if len(args) != 1:
            raise _Refused(f"expects 1 number, got {len(args)} arguments")
        value = _number(args[0])
        if not lo <= value <= hi:
            raise _Refused(f"{name} {value:g} is out of range {lo:g}-{hi:g}")
        if name == "bars":
            if value != int(value):
                raise _Refused(f"bars must be a whole number, got {value:g}")
            value = int(value)
        with self._params_lock:
            setattr(self._params, name, value)

    def _on_level0(self, address, *args) -> None:
        if not 1 <= len(args) <= LEVEL0_MAX_VALUES:
            raise _Refused(f"expects 1-{LEVEL0_MAX_VALUES} numbers, got {len(args)}")
        values = [_number(a) for a in args]
        lo, hi = LEVEL0_RANGE
        bad = [v for v in values if not lo <= v <= hi]
        if bad:
            raise _Refused(f"density {bad[0]:g} is out of range {lo:g}-{hi:g} (onsets per step)")
        with self._params_lock:
            self._params.level0 = values

    def _on_level0_clear(self, address, *args) -> None:
        with self._params_lock:
            self._params.level0 = None

    def _on_generate(self, address, *args) -> None:
        with self._params_lock:
            snapshot = copy.deepcopy(self._params)
        if snapshot.level0 is not None:
            snapshot.level0 = resample_level0(snapshot.level0, snapshot.bars)
        try:
            self._jobs.put_nowait(snapshot)
        except queue.Full:
            reason = f"busy: {self.max_queue} generation requests are already waiting"
            self._send("/fractal/error", f"refused /fractal/generate: {reason}")
            raise _Refused(reason) from None

    def _on_unknown(self, address, *args) -> None:
        raise _Refused("unknown address (see fractalmidi.osc for the address space)")

    # ----------------------------------------------------------------- generation (worker thread)
    def _work(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                params = self._jobs.get(timeout=0.1)
            except queue.Empty:
                continue
            try:
                self._generate_one(params)
            except Exception:  # a bug in the reply path; the worker carries on
                logger.exception("unexpected error in the OSC worker (it keeps running)")

    def _generate_one(self, params: OSCParams) -> None:
        t0 = time.monotonic()
        try:
            piece = self.generate(params)
            path = write_midi(piece, self._next_path()).resolve()
        except Exception as e:
            message = f"generation failed: {type(e).__name__}: {e}"
            logger.error(message, exc_info=True)
            self.log.append((time.time(), "ERROR", message))
            self._send("/fractal/error", message)
            return
        self.last_result = (path, piece)
        self._note("INFO", f"generated {piece.num_bars} bars, {len(piece.notes)} notes in {time.monotonic() - t0:.1f} s: {path}")
        self._send_result(path, piece)
        if self.on_result is not None:
            try:
                self.on_result(path, piece)
            except Exception as e:
                logger.error("on_result failed: %s: %s", type(e).__name__, e, exc_info=True)
                self.log.append((time.time(), "ERROR", f"on_result failed: {type(e).__name__}: {e}"))

    def _next_path(self) -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        while True:
            path = self.out_dir / f"fractal_{stamp}_{self._file_counter % 1000:03d}.mid"
            self._file_counter += 1
            if not path.exists():
                return path

    def _send(self, address: str, *args) -> None:
        try:
            with self._reply_lock:
                self._reply.send_message(address, list(args))
        except OSError as e:
            logger.warning("could not send %s to %s:%s: %s", address, self.reply_host, self.reply_port, e)

    def _send_result(self, path: Path, piece: Piece) -> None:
        notes = piece.notes  # (N, 4): pitch, start, end, velocity, sorted by start
        times = piece.step_times()  # (T + 1,) seconds at each step
        self._send("/fractal/result/path", str(path))
        self._send("/fractal/result/bars", piece.num_bars)
        self._send("/fractal/result/notes", len(notes))
        for pitch, start, end, velocity in notes.tolist():
            time.sleep(NOTE_INTERVAL_S)
            self._send(
                "/fractal/note", pitch, velocity, float(times[start]), float(times[end] - times[start]), start
            )
        time.sleep(NOTE_INTERVAL_S)
        self._send("/fractal/result/done", len(notes))
