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
  refused: the parameter keeps its value and the reason is logged (logger `fractalmidi.web.osc`
  at WARNING, and `FractalOSCServer.log`; past 50 refusals in one second they are counted,
  not logged one by one).
- More than `max_messages_per_second` messages in one second (a flood): the rest of that
  second is dropped, logged once.
- A `/fractal/generate` that arrives while `max_queue` requests already wait is refused (busy).
- OSC 1.0 address patterns work (`/fractal/param/{temperature,cfg} f 1.0`, `*`, `?`, `[a-z]`,
  `[!a-z]`, `{a,b}`; a wildcard never matches across a '/'). They are matched here, part by
  part against the few addresses above, in time linear in the pattern's length times the
  address's, never by a backtracking regex; a pattern is refused (not matched at all) when it
  is longer than 256 characters, holds more than 16 wildcards (`*`, `?`, `[...]`, `{...}` each
  count one) or more than 32 alternatives in all its `{...}`, or leaves a `[` or `{` open in
  its part (a '/' inside them does).
  Bundles are applied at once (their time tags are ignored) and count as the messages they
  hold; a datagram over 8192 bytes (python-osc's receive size) arrives cut and is refused.
- UDP drops packets in unpaced bursts: a sender should pace bursts (about 0.5 ms apart).
"""

from __future__ import annotations

import collections
import copy
import functools
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

from .. import controls
from .. import limits_fractalmidi as limits
from ..midi_io import write_midi
from ..piece import Piece

logger = logging.getLogger(__name__)  # "fractalmidi.web.osc"


def param_ranges() -> dict[str, tuple]:
    """The allowed range (inclusive) of each /fractal/param/NAME: the shared limits every
    front-end uses (`limits_fractalmidi`, `controls`), read when a value is checked."""
    return {
        "temperature": limits.TEMPERATURE,
        "cfg": limits.GUIDANCE_SCALE,
        "bars": (1, controls.MAX_INTERACTIVE_BARS),
    }


def level0_range() -> tuple[float, float]:
    """The allowed per-bar density of /fractal/latent/level0 (onsets per step): what the shipped
    model represents (`controls.DEFAULT_DENSITY_MAX`)."""
    return limits.density_range(controls.DEFAULT_DENSITY_MAX)


# the same ranges as names (their values when this module was imported)
TEMPERATURE_RANGE = param_ranges()["temperature"]
CFG_RANGE = param_ranges()["cfg"]
BARS_RANGE = param_ranges()["bars"]
LEVEL0_RANGE = level0_range()
LEVEL0_MAX_VALUES = 1024
_PARAM_NAMES = ("temperature", "cfg", "bars")

NOTE_INTERVAL_S = 0.0005  # pause between /fractal/note messages, so UDP does not drop them
REFUSALS_LOGGED_PER_SECOND = 50  # further refusals in the same second are only counted
# the budget of an incoming address pattern (matching is polynomial whatever the pattern; these
# keep its cost small and refuse what no sender needs)
MAX_ADDRESS_LENGTH = 256  # characters
MAX_PATTERN_WILDCARDS = 16  # '*', '?', '[...]' and '{...}', each counts one
MAX_PATTERN_ALTERNATIVES = 32  # strings in all the '{...}' of one pattern


@dataclass
class OSCParams:
    """The current performance parameters (always in range)."""

    temperature: float = 0.8  # sampling temperature, 0.1-2.0 (the app starts at its model's default)
    cfg: float = 1.0  # classifier-free guidance scale, 0.0-10.0 (likewise)
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
    return np.clip(out, *level0_range()).tolist()


def _check_params(params: OSCParams) -> None:
    """Starting parameters (from the app: its model's decoding defaults) in the OSC ranges."""
    for name, (lo, hi) in param_ranges().items():
        value = getattr(params, name)
        if not lo <= value <= hi:
            raise ValueError(f"OSC {name} {value} is outside {lo}-{hi}")


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


# ----------------------------------------------------------------------------- address patterns
# python-osc turns a pattern into a regular expression whose backtracking is exponential in its
# `{...}` groups (20 groups of `{f,f,f}` froze the process, GIL and all, for 42 s), so incoming
# patterns are matched here instead: each '/'-separated part of the pattern against the same
# part of each known address, by a set of positions advanced token by token (a Thompson-style
# simulation: no backtracking), at most (part length + 1) positions per token.


class PatternRefused(ValueError):
    """An address pattern that is not matched at all: malformed or over the budget (the text says why)."""


_WILDCARD_CHARS = frozenset("*?[{")


def parse_address_pattern(pattern: str, *, budget: bool = True) -> list[list[tuple]]:
    """An OSC 1.0 address pattern as one token list per '/'-separated part (the leading '/'
    dropped). Tokens: ("=", text) literal characters; ("?",) any one character; ("*",) any
    run of characters; ("[", negate, chars, ranges) one character of a set, `[a-z]`, `[!abc]`
    (a '-' first or last is literal); ("{", alternatives) one of the comma-separated strings
    (their characters are literal). Raises PatternRefused when the pattern does not start with
    '/', is longer than MAX_ADDRESS_LENGTH, leaves a '[' or '{' open within its part, or (with
    `budget`) holds more than MAX_PATTERN_WILDCARDS wildcards or MAX_PATTERN_ALTERNATIVES
    alternatives. Linear in the pattern's length."""
    if len(pattern) > MAX_ADDRESS_LENGTH:
        raise PatternRefused(f"address pattern of {len(pattern)} characters, longer than {MAX_ADDRESS_LENGTH}")
    if not pattern.startswith("/"):
        raise PatternRefused("address pattern does not start with '/'")
    wildcards = alternatives = 0
    parts = []
    for part in pattern[1:].split("/"):
        tokens: list[tuple] = []
        literal: list[str] = []

        def flush():
            if literal:
                tokens.append(("=", "".join(literal)))
                literal.clear()

        i = 0
        while i < len(part):
            c = part[i]
            if c in _WILDCARD_CHARS:
                wildcards += 1
                flush()
            if c == "*":
                if not (tokens and tokens[-1][0] == "*"):  # '**' is '*'
                    tokens.append(("*",))
            elif c == "?":
                tokens.append(("?",))
            elif c == "[":
                end = part.find("]", i + 1)
                if end < 0:
                    raise PatternRefused("malformed address pattern: a '[' without its ']' in the same part")
                body = part[i + 1:end]
                negate = body.startswith("!")
                if negate:
                    body = body[1:]
                chars, ranges, j = set(), [], 0
                while j < len(body):
                    if j + 2 < len(body) and body[j + 1] == "-":
                        ranges.append((body[j], body[j + 2]))
                        j += 3
                    else:
                        chars.add(body[j])
                        j += 1
                tokens.append(("[", negate, frozenset(chars), tuple(ranges)))
                i = end
            elif c == "{":
                end = part.find("}", i + 1)
                if end < 0:
                    raise PatternRefused("malformed address pattern: a '{' without its '}' in the same part")
                options = part[i + 1:end].split(",")
                alternatives += len(options)
                tokens.append(("{", tuple(dict.fromkeys(options))))  # duplicates dropped
                i = end
            else:
                literal.append(c)
            i += 1
            if budget and wildcards > MAX_PATTERN_WILDCARDS:
                raise PatternRefused(
                    f"address pattern has more than {MAX_PATTERN_WILDCARDS} wildcards ('*', '?', '[...]', '{{...}}')"
                )
            if budget and alternatives > MAX_PATTERN_ALTERNATIVES:
                raise PatternRefused(
                    f"address pattern has more than {MAX_PATTERN_ALTERNATIVES} alternatives in its '{{...}}'"
                )
        flush()
        parts.append(tokens)
    return parts


def _in_class(token: tuple, c: str) -> bool:
    _, negate, chars, ranges = token
    return (c in chars or any(lo <= c <= hi for lo, hi in ranges)) != negate


def _match_part(tokens: list[tuple], text: str) -> tuple[bool, int]:
    """Whether one part's tokens match all of `text` (one part of an address, no '/'), and the
    work done: the (token, position) pairs visited, each alternative counting one. The set of
    reachable positions never holds more than len(text) + 1, so the work is at most
    (len(text) + 1) x (tokens + alternatives)."""
    n = len(text)
    positions = {0}
    work = 0
    for token in tokens:
        kind = token[0]
        work += len(positions) * (len(token[1]) if kind == "{" else 1)
        if kind == "=":
            lit = token[1]
            positions = {i + len(lit) for i in positions if text.startswith(lit, i)}
        elif kind == "?":
            positions = {i + 1 for i in positions if i < n}
        elif kind == "*":
            positions = set(range(min(positions), n + 1))
        elif kind == "[":
            positions = {i + 1 for i in positions if i < n and _in_class(token, text[i])}
        else:  # "{"
            positions = {i + len(a) for i in positions for a in token[1] if text.startswith(a, i)}
        if not positions:
            return False, work
    return n in positions, work


def match_address_pattern(pattern: str, addresses, *, budget: bool = True) -> tuple[list[str], int]:
    """The `addresses` (exact OSC addresses, in their order) that the OSC 1.0 address pattern
    matches, and the work done (see `_match_part`; 0 for an exact address). Each part of the
    pattern is matched against the same part of an address, so wildcards never match '/' and
    the part counts must be equal. Raises PatternRefused (see `parse_address_pattern`). The
    work is at most (len(pattern) + 1) x (longest address part + 1) x len(addresses), whatever
    the pattern: no backtracking."""
    addresses = list(addresses)
    if pattern in addresses:  # the common case: an exact address
        return [pattern], 0
    parts = parse_address_pattern(pattern, budget=budget)
    decided: dict[tuple[int, str], bool] = {}  # (part index, address part) -> matched
    matched, work = [], 0
    for address in addresses:
        names = address.split("/")[1:]
        if len(names) != len(parts):
            continue
        for k, name in enumerate(names):
            if (k, name) not in decided:
                decided[k, name], w = _match_part(parts[k], name)
                work += w
            if not decided[k, name]:
                break
        else:
            matched.append(address)
    return matched, work


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
        clock: `clock() -> seconds`, the monotonic clock of the one-second windows (flood limit,
            refusal logging); tests pass a fake one.
        params: the starting parameters (default `OSCParams()`); the app passes its model's
            decoding defaults (temperature, guidance scale).
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
        clock: Callable[[], float] = time.monotonic,
        params: OSCParams | None = None,
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
        self._clock = clock

        self.last_result: tuple[Path, Piece] | None = None
        self.log: collections.deque = collections.deque(maxlen=500)  # (time, level, message)
        self.dropped_messages = 0  # total dropped by the flood limit

        self._params = params if params is not None else OSCParams()  # checked: see _check_params
        _check_params(self._params)
        self._params_lock = threading.Lock()
        self._jobs: queue.Queue = queue.Queue(maxsize=self.max_queue)
        self._stop = threading.Event()
        self._reply = SimpleUDPClient(reply_host, self.reply_port)
        self._reply_lock = threading.Lock()
        self._file_counter = 0
        self._server: _UDPServer | None = None
        self._server_thread: threading.Thread | None = None
        self._worker_thread: threading.Thread | None = None
        # one-second windows, touched only by the server thread; the first starts at the first message
        self._window_start = -math.inf
        self._window_messages = 0
        self._window_refusals = 0
        self._unlogged_refusals = 0

        # the address space: exact address -> handler(address pattern, *args). Incoming patterns
        # are matched against these keys by match_address_pattern, never by python-osc.
        self.routes: dict[str, Callable] = {}
        for name in _PARAM_NAMES:
            self.routes[f"/fractal/param/{name}"] = functools.partial(self._on_param, name=name)
        self.routes["/fractal/latent/level0"] = self._on_level0
        self.routes["/fractal/latent/level0/clear"] = self._on_level0_clear
        self.routes["/fractal/generate"] = self._on_generate
        # python-osc's server class wants a dispatcher; it is never asked to match (datagrams
        # are routed by `_on_datagram`), and holds the same exact addresses for reference
        self.dispatcher = Dispatcher()
        for address, handler in self.routes.items():
            self.dispatcher.map(address, handler)

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
        now = self._clock()
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
            address, args = msg.address, list(msg.params)
            shown = address if len(address) <= 64 else address[:64] + "..."  # in the log
            try:
                targets, _ = match_address_pattern(address, self.routes)
            except PatternRefused as r:
                self._refuse(shown, args, str(r))
                continue
            except Exception:  # a bug in the matcher: the message is dropped, the server keeps running
                logger.exception("error matching the address pattern %.64s (server keeps running)", address)
                continue
            if not targets:
                self._refuse(shown, args, "unknown address (see fractalmidi.web.osc for the address space)")
                continue
            for target in targets:  # in the address space's order
                try:
                    self.routes[target](address, *args)
                except _Refused as r:
                    self._refuse(shown, args, str(r))
                except Exception:
                    logger.exception("error handling %s (server keeps running)", shown)

    def _on_param(self, address, *args, name: str) -> None:
        lo, hi = param_ranges()[name]
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
        lo, hi = level0_range()
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
