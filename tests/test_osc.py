"""The OSC server (fractalmidi/osc.py) driven by python-osc and by liblo-tools' oscsend / oscdump.

Every server listens on a free port of 127.0.0.1; `generate` is a fake that builds a small
piece whose bar densities follow the level0 shape it is given. UDP drops packets in unpaced
bursts, so tests pace their sends or count only what arrived.

No test asserts on timing or machine load: a state change is polled for (`wait_for`, with a
generous liveness bound that returns as soon as it holds), and the one-second windows of the
flood limit and of refusal logging are driven by a fake clock.
"""

import logging
import math
import queue
import shutil
import socket
import subprocess
import threading
import time

import numpy as np
import pytest
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_server import BlockingOSCUDPServer
from pythonosc.udp_client import SimpleUDPClient

from fractalmidi import Piece, read_midi
from fractalmidi.web.osc import REFUSALS_LOGGED_PER_SECOND, FractalOSCServer, OSCParams, resample_level0

PACE_S = 0.0005  # between sends, so the kernel does not drop them
TIMEOUT_S = 60.0  # liveness bound of every wait: generous, a wait returns as soon as its condition holds


# ----------------------------------------------------------------------------- helpers
def fake_generate(params: OSCParams) -> Piece:
    """A piece of `params.bars` bars of 4/4 whose density follows level0 (0.25 when None)."""
    density = params.level0 if params.level0 is not None else [0.25] * params.bars
    assert len(density) == params.bars
    notes = []
    for bar, d in enumerate(density):
        for i in range(round(d * 16)):  # d onsets per step, over 16 steps
            step = bar * 16 + i % 16
            notes.append((60 + i // 16, step, step + 1, 80))
    return Piece.from_bars([(4, 4)] * params.bars, notes=np.array(notes, dtype=np.int64).reshape(-1, 4))


def wait_for(condition, timeout=TIMEOUT_S, interval=0.01):
    """Poll `condition` until it holds (True) or `timeout` seconds pass (a liveness bound only)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_text(server) -> str:
    return "\n".join(message for _, _, message in server.log)


class Receiver:
    """A python-osc server on a free port that records every (address, args) it receives, in
    the order they arrive (one datagram at a time, not a thread each)."""

    def __init__(self):
        self.messages = queue.Queue()
        self.received = []
        dispatcher = Dispatcher()
        dispatcher.set_default_handler(lambda address, *args: self.messages.put((address, args)))
        self.server = BlockingOSCUDPServer(("127.0.0.1", 0), dispatcher)
        try:  # room for a burst of notes while this machine is busy (the kernel may cap it)
            self.server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        except OSError:
            pass
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def wait(self, address, timeout=TIMEOUT_S):
        """Collect messages until `address` arrives; returns its args (None on timeout)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                msg = self.messages.get(timeout=0.05)
            except queue.Empty:
                continue
            self.received.append(msg)
            if msg[0] == address:
                return msg[1]
        return None

    def wait_until(self, condition, timeout=TIMEOUT_S):
        """Collect messages until `condition()` holds (checked on `received`); returns whether it did."""
        end = time.monotonic() + timeout
        while not condition():
            if time.monotonic() >= end:
                return False
            try:
                self.received.append(self.messages.get(timeout=0.05))
            except queue.Empty:
                pass
        return True

    def of(self, address):
        return [args for a, args in self.received if a == address]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def make_server(tmp_path, receiver):
    """make_server(**kwargs) -> a started FractalOSCServer on a free port, replying to `receiver`."""
    servers = []

    def make(generate=fake_generate, **kwargs):
        kwargs.setdefault("out_dir", tmp_path / "osc")
        server = FractalOSCServer(generate, port=0, reply_port=receiver.port, **kwargs).start()
        servers.append(server)
        return server

    yield make
    for s in servers:
        s.stop()


def client_for(server) -> SimpleUDPClient:
    host, port = server.address
    return SimpleUDPClient(host, port)


def send(client, address, args):
    """Send one message (args as a list; [] for none), paced. It is handled later, on the
    server thread, in the order sent: poll for its effect (`wait_for`), never assume it."""
    client.send_message(address, args)
    time.sleep(PACE_S)


class FakeClock:
    """A clock for FractalOSCServer's one-second windows that moves only when a test says so."""

    def __init__(self, now=0.0):
        self.now = now

    def __call__(self):
        return self.now


def unstarted_server(tmp_path, clock, **kwargs):
    """A FractalOSCServer that is not listening: tests hand datagrams to `_on_datagram`
    themselves, as the server thread would, one at a time, at the fake clock's time."""
    return FractalOSCServer(fake_generate, port=0, reply_port=free_udp_port(), out_dir=tmp_path / "osc",
                            clock=clock, **kwargs)


LOCAL = ("127.0.0.1", 50000)  # the sender address `_on_datagram` is given


def send_raw(server, datagram: bytes):
    """Send bytes as one UDP datagram to the server (malformed ones included)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(datagram, server.address)


def raw_message(address, *typed_args) -> bytes:
    """An OSC message with explicit type tags: raw_message('/a', ('f', 1.0), ('s', 'x'))."""
    b = OscMessageBuilder(address=address)
    for tag, value in typed_args:
        b.add_arg(value, tag)
    return b.build().dgram


# ----------------------------------------------------------------------------- parameters
def test_defaults_and_binds_loopback(make_server):
    server = make_server()
    assert server.address[0] == "127.0.0.1" and server.address[1] > 0
    assert server.params == OSCParams()
    assert server.running


def test_params_set_by_python_osc(make_server):
    server = make_server()
    c = client_for(server)
    send(c, "/fractal/param/temperature", [0.5])
    send(c, "/fractal/param/cfg", [3])  # an int is fine for a float
    send(c, "/fractal/param/bars", [8])
    send(c, "/fractal/latent/level0", [0.0, 1.0, 2.0])
    assert wait_for(lambda: server.params.level0 is not None)
    p = server.params
    assert p.temperature == 0.5 and p.cfg == 3.0 and p.bars == 8 and p.level0 == [0.0, 1.0, 2.0]
    assert isinstance(p.bars, int)
    send(c, "/fractal/param/bars", [16.0])  # TouchDesigner sends every channel as a float
    assert wait_for(lambda: server.params.bars == 16), server.params
    send(c, "/fractal/param/{temperature,cfg}", [2.0])  # an OSC address pattern
    assert wait_for(lambda: server.params.temperature == 2.0 and server.params.cfg == 2.0), server.params
    send(c, "/fractal/latent/level0/clear", [])
    assert wait_for(lambda: server.params.level0 is None), server.params
    # `params` is a copy
    server.params.temperature = 99.0
    assert server.params.temperature == 2.0


BAD_MESSAGES = [
    # (address, datagram, words the logged reason must contain)
    ("string", raw_message("/fractal/param/temperature", ("s", "hot")), "string"),
    ("blob", raw_message("/fractal/param/cfg", ("b", b"\x00\x01")), "blob"),
    ("boolean", raw_message("/fractal/param/cfg", ("T", True)), "boolean"),
    ("nan", raw_message("/fractal/param/temperature", ("f", math.nan)), "finite"),
    ("inf", raw_message("/fractal/param/cfg", ("d", math.inf)), "finite"),
    ("low", raw_message("/fractal/param/temperature", ("f", 0.0)), "out of range 0.1-2"),
    ("high", raw_message("/fractal/param/cfg", ("f", 10.5)), "out of range 0-10"),
    ("bars high", raw_message("/fractal/param/bars", ("i", 257)), "out of range 1-256"),
    ("bars zero", raw_message("/fractal/param/bars", ("i", 0)), "out of range 1-256"),
    ("bars fraction", raw_message("/fractal/param/bars", ("f", 7.5)), "whole number"),
    ("no args", raw_message("/fractal/param/temperature"), "got 0 arguments"),
    ("two args", raw_message("/fractal/param/cfg", ("f", 1.0), ("f", 2.0)), "got 2 arguments"),
    ("unknown", raw_message("/fractal/param/volume", ("f", 1.0)), "unknown address"),
    ("level0 empty", raw_message("/fractal/latent/level0"), "got 0"),
    ("level0 range", raw_message("/fractal/latent/level0", ("f", 1.0), ("f", 5.0)), "out of range 0-4"),
    ("level0 string", raw_message("/fractal/latent/level0", ("f", 1.0), ("s", "x")), "string"),
    ("level0 nan", raw_message("/fractal/latent/level0", ("f", math.nan)), "finite"),
    ("garbage", b"\x00garbage that is no OSC", "not a valid OSC packet"),
    ("truncated", raw_message("/fractal/param/cfg", ("f", 2.0), ("s", "abc"))[:-2], "not a valid OSC packet"),
    ("wildcards", raw_message("/fractal/param/" + "*" * 30 + "x", ("f", 1.0)), "address pattern"),
]


@pytest.mark.parametrize("name,datagram,reason", BAD_MESSAGES, ids=[b[0] for b in BAD_MESSAGES])
def test_bad_messages_refused_with_reason(make_server, caplog, name, datagram, reason):
    server = make_server()
    c = client_for(server)
    send(c, "/fractal/latent/level0", [1.0, 2.0])
    assert wait_for(lambda: server.params.level0 == [1.0, 2.0])
    before = server.params
    with caplog.at_level("WARNING", logger="fractalmidi.web.osc"):
        send_raw(server, datagram)
        assert wait_for(lambda: reason in log_text(server)), log_text(server)
    assert server.params == before
    assert any(r.name == "fractalmidi.web.osc" and r.levelno == logging.WARNING and reason in r.getMessage()
               for r in caplog.records)
    assert server.running


def test_all_refusals_then_still_serving(make_server):
    """Every bad kind in a row (paced), each refused (once handled), then a good message is still applied."""
    server = make_server()
    c = client_for(server)
    for _, datagram, _ in BAD_MESSAGES:
        send_raw(server, datagram)
        time.sleep(PACE_S)

    def refused():
        return [m for _, _, m in server.log if m.startswith("refused ")]

    # each bad datagram is one refusal (fewer than the 50 logged a second): wait until all are handled
    assert wait_for(lambda: len(refused()) >= len(BAD_MESSAGES)), log_text(server)
    assert len(refused()) == len(BAD_MESSAGES), log_text(server)
    for _, _, reason in BAD_MESSAGES:
        assert any(reason in m for m in refused()), (reason, log_text(server))
    assert server.params == OSCParams()
    assert server.running
    send(c, "/fractal/param/temperature", [1.5])
    assert wait_for(lambda: server.params.temperature == 1.5), log_text(server)


def test_refusal_logging_is_bounded(tmp_path):
    """Past 50 refusals in one second they are counted, and the count is logged with the next
    second's first message (a fake clock: 200 refusals at t=0, one at t=1)."""
    clock = FakeClock(0.0)
    server = unstarted_server(tmp_path, clock)
    bad = raw_message("/fractal/param/cfg", ("s", "x"))
    for _ in range(200):
        server._on_datagram(bad, LOCAL)
    refused = [m for _, _, m in server.log if m.startswith("refused /fractal/param/cfg")]
    assert len(refused) == REFUSALS_LOGGED_PER_SECOND
    assert "not logged" not in log_text(server)  # not before the second is over
    clock.now = 0.999
    server._on_datagram(bad, LOCAL)  # still the same second: counted, not logged
    assert "not logged" not in log_text(server)
    clock.now = 1.0
    server._on_datagram(raw_message("/fractal/nowhere"), LOCAL)  # the next second's first message
    unlogged = 201 - REFUSALS_LOGGED_PER_SECOND
    assert [m for _, _, m in server.log if "not logged" in m] == [
        f"{unlogged} more refusals in the last second were not logged"]
    assert log_text(server).endswith("refused /fractal/nowhere: unknown address (see fractalmidi.web.osc for the address space)")
    refused = [m for _, _, m in server.log if m.startswith("refused /fractal/param/cfg")]
    assert len(refused) == REFUSALS_LOGGED_PER_SECOND
    assert server.params == OSCParams()


def test_flood_dropped_and_logged_once(tmp_path):
    """More than max_messages_per_second in one second (a fake clock): the rest of that second
    is dropped and logged once; the next second is served again."""
    limit, n = 500, 3000
    clock = FakeClock(0.0)
    server = unstarted_server(tmp_path, clock, max_messages_per_second=limit)
    rng = np.random.default_rng(0)
    values = rng.uniform(-5, 5, n)
    for v in values:
        server._on_datagram(raw_message("/fractal/param/temperature", ("f", float(v))), LOCAL)
    assert server.dropped_messages == n - limit
    flood_lines = [m for _, _, m in server.log if m.startswith("flood")]
    assert flood_lines == [f"flood: more than {limit} messages in one second; dropping the rest of this second"]
    # the admitted ones are the first `limit`: the last in-range value among them is applied
    sent = [float(np.float32(v)) for v in values[:limit]]  # as OSC's 32-bit floats arrive
    in_range = [v for v in sent if 0.1 <= v <= 2.0]
    assert server.params.temperature == in_range[-1]
    assert server.params.cfg == OSCParams().cfg
    clock.now = 0.5  # the same second: still dropped
    server._on_datagram(raw_message("/fractal/param/temperature", ("f", 0.7)), LOCAL)
    assert server.dropped_messages == n - limit + 1 and server.params.temperature == in_range[-1]
    clock.now = 1.0  # the next second
    server._on_datagram(raw_message("/fractal/param/temperature", ("f", 0.7)), LOCAL)
    assert server.params.temperature == pytest.approx(0.7)
    assert server.dropped_messages == n - limit + 1
    assert len([m for _, _, m in server.log if m.startswith("flood")]) == 1
    # a bundle counts as the messages it holds: with two left in a second, its third is dropped
    clock.now = 2.0
    for _ in range(limit - 2):
        server._on_datagram(raw_message("/fractal/param/bars", ("i", 8)), LOCAL)
    b = OscBundleBuilder(IMMEDIATELY)
    for value in (0.2, 0.3, 0.4):
        m = OscMessageBuilder(address="/fractal/param/cfg")
        m.add_arg(value, "f")
        b.add_content(m.build())
    server._on_datagram(b.build().dgram, LOCAL)
    assert server.params.cfg == pytest.approx(0.3) and server.dropped_messages == n - limit + 2
    assert len([m for _, _, m in server.log if m.startswith("flood")]) == 2  # once in each flooded second


def test_ten_thousand_mixed_messages(make_server):
    """Good and bad messages, bundles and garbage: the server survives, params stay in range."""
    server = make_server(max_messages_per_second=100_000)
    c = client_for(server)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rng = np.random.default_rng(1)
    values = [math.nan, math.inf, -1.0, 0.0, 0.05, 0.5, 1.0, 1.9, 2.0, 5.0, 10.0, 11.0, 300.0]
    addresses = ["/fractal/param/temperature", "/fractal/param/cfg", "/fractal/param/bars",
                 "/fractal/latent/level0", "/fractal/nothing", "/fractal/*/*", "/"]
    for i in range(10_000):
        kind = i % 10
        address = addresses[rng.integers(len(addresses))]
        if kind < 5:
            d = raw_message(address, ("f", values[rng.integers(len(values))]))
        elif kind == 5:
            d = raw_message(address, ("s", "text"), ("i", 3))
        elif kind == 6:
            d = bytes(rng.integers(0, 256, rng.integers(1, 64), dtype=np.uint8))
        elif kind == 7:
            b = OscBundleBuilder(IMMEDIATELY)
            for _ in range(3):
                b.add_content(OscMessageBuilder(address="/fractal/param/cfg").build())
            d = b.build().dgram
        elif kind == 8:
            d = raw_message("/fractal/latent/level0", *[("f", float(v)) for v in rng.uniform(-1, 5, 8)])
        else:
            d = raw_message("/fractal/param/bars", ("i", int(rng.integers(-10, 400))))
        sock.sendto(d, server.address)
        if i % 8 == 0:
            time.sleep(PACE_S)
    sock.close()

    def applied():  # re-sent while polling: one datagram may be lost if the backlog overflows the buffer
        if server.params.cfg == 4.25:
            return True
        c.send_message("/fractal/param/cfg", [4.25])
        return False

    assert wait_for(applied, timeout=TIMEOUT_S, interval=0.5), log_text(server)
    p = server.params
    assert server.running
    assert 0.1 <= p.temperature <= 2.0 and 0.0 <= p.cfg <= 10.0 and 1 <= p.bars <= 256
    assert p.level0 is None or all(0.0 <= v <= 4.0 for v in p.level0)


# ----------------------------------------------------------------------------- address patterns
ADDRESSES = ["/fractal/param/temperature", "/fractal/param/cfg", "/fractal/param/bars",
             "/fractal/latent/level0", "/fractal/latent/level0/clear", "/fractal/generate"]
PARAMS = ADDRESSES[:3]


def repro_pattern(groups=20) -> str:
    """Issue 10's datagram address: `{c,c,c}` per character of the address, '/' included, then X."""
    return "/" + "".join("{%s,%s,%s}" % (c, c, c) for c in "fractal/param/temperature"[:groups]) + "X"


def per_part_pattern(groups=20) -> str:
    """The same groups kept within their parts (well formed), the first `groups` characters, then X."""
    out, n = "", 0
    for part in "fractal/param/temperature".split("/"):
        out += "/"
        for c in part:
            out += "{%s,%s,%s}" % (c, c, c) if n < groups else c
            n += 1
    return out + "X"


PATTERN_CASES = [
    # (pattern, the addresses it matches, OSC 1.0)
    ("/fractal/param/temperature", ADDRESSES[:1]),
    ("/fractal/param/*", PARAMS),
    ("/fractal/param/temp?rature", ADDRESSES[:1]),
    ("/fractal/param/{temperature,cfg}", ADDRESSES[:2]),
    ("/fractal/param/{cfg,temperature}", ADDRESSES[:2]),  # the address space's order
    ("/fractal/param/{temperature,temperature}", ADDRESSES[:1]),  # once
    ("/fractal/{param,latent}/*", ADDRESSES[:4]),
    ("/fractal/*/*", ADDRESSES[:4]),  # a wildcard never matches '/'
    ("/fractal/*", ["/fractal/generate"]),
    ("/*/*/*/*", ["/fractal/latent/level0/clear"]),
    ("/fractal/[a-g]*", ["/fractal/generate"]),
    ("/fractal/[a-g]*/*", []),  # param and latent start after g
    ("/fractal/[!a-g]*/*", ADDRESSES[:4]),
    ("/fractal/param/[bc]*", ["/fractal/param/cfg", "/fractal/param/bars"]),
    ("/fractal/param/[!bc]*", ADDRESSES[:1]),
    ("/fractal/param/[b-d]??", ["/fractal/param/cfg"]),  # exactly 3 characters
    ("/fractal/latent/level[0-9]/clear", ["/fractal/latent/level0/clear"]),
    ("/fractal/latent/level[!0-9]", []),
    ("/fractal/latent/level[0-]", ["/fractal/latent/level0"]),  # a '-' last is literal
    ("/fractal/param/*e*", ["/fractal/param/temperature"]),
    ("/fractal/param/**ars", ["/fractal/param/bars"]),
    ("/fractal/param/t*e", ["/fractal/param/temperature"]),
    ("/fractal/param/?", []),
    ("/fractal/param/{}", []),
    ("/fractal/param/{,b}ars", ["/fractal/param/bars"]),  # an empty alternative
    ("/fractal/param", []),
    ("/fractal/param/temperature/", []),
    ("/fractal//temperature", []),
    ("/", []),
    ("/*", []),
]


@pytest.mark.parametrize("pattern,expected", PATTERN_CASES, ids=[c[0] for c in PATTERN_CASES])
def test_pattern_matcher_follows_osc_1_0(pattern, expected):
    from fractalmidi.web.osc import match_address_pattern

    matched, work = match_address_pattern(pattern, ADDRESSES)
    assert matched == expected
    assert work <= (len(pattern) + 1) * (max(len(a) for a in ADDRESSES) + 1) * len(ADDRESSES)


REFUSED_PATTERNS = [
    # (pattern, words of the reason)
    (repro_pattern(20), "'{' without its '}'"),  # the '/' inside the braces splits them
    (per_part_pattern(20), "more than 32 alternatives"),
    ("/fractal/param/" + "*" * 17, "more than 16 wildcards"),
    ("/fractal/param/" + "?" * 17, "more than 16 wildcards"),
    ("/fractal/param/" + "[t]" * 17, "more than 16 wildcards"),
    ("/fractal/param/{" + ",".join("t" * 33) + "}", "more than 32 alternatives"),
    ("/fractal/param/[te", "'[' without its ']'"),
    ("/fractal/[param/temperature]", "'[' without its ']'"),
    ("/fractal/" + "p" * 300, "longer than 256"),
    ("fractal/param/cfg", "start with '/'"),
]


@pytest.mark.parametrize("pattern,reason", REFUSED_PATTERNS, ids=[r[1] + f" {i}" for i, r in enumerate(REFUSED_PATTERNS)])
def test_pattern_matcher_refuses_with_reason(pattern, reason):
    from fractalmidi.web.osc import PatternRefused, match_address_pattern

    with pytest.raises(PatternRefused, match="address pattern") as e:
        match_address_pattern(pattern, ADDRESSES)
    assert reason in str(e.value)


def hostile_patterns() -> list[str]:
    """Patterns that make a backtracking matcher exponential, each at most 256 characters."""
    groups = "".join("{%s,%s,%s}" % (c, c, c) for c in "temperature")
    patterns = [
        repro_pattern(20),
        per_part_pattern(20),
        per_part_pattern(25),
        "/fractal/param/" + groups + "X",
        "/fractal/param/" + "*t" * 120 + "X",  # many stars
        "/fractal/param/" + "*?" * 120,
        "/*/*/" + "?*" * 125,
        "/fractal/param/" + "{t,{t,{t,{t," * 19 + "}" * 4,  # nested alternatives
        "/fractal/param/{" + ",".join(["t", "te", "tem", "temp"] * 50) + "}X",
        "/fractal/param/" + "[!/][t-u]{t,te,tem}" * 12,
        "/fractal/param/" + "{" * 240,
    ]
    return [p[:256] for p in patterns]


def test_hostile_patterns_decided_with_bounded_work():
    """Issue 10: python-osc's regex took 42 s on repro_pattern(20), 9x more per 2 groups. Each
    hostile pattern is decided (refused by the budget, or matched without it) with a work count
    polynomial in the lengths; the call returning at all is checked on a thread with a
    generous timeout (a liveness check, not a timing assertion)."""
    from fractalmidi.web.osc import PatternRefused, match_address_pattern

    results = {}

    def run():
        for pattern in hostile_patterns():
            assert len(pattern) <= 256
            try:
                results[pattern, True] = match_address_pattern(pattern, ADDRESSES)
            except PatternRefused as e:
                results[pattern, True] = str(e)
            try:  # without the budget: the matching itself is bounded
                results[pattern, False] = match_address_pattern(pattern, ADDRESSES, budget=False)
            except PatternRefused as e:
                results[pattern, False] = str(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=TIMEOUT_S)  # a liveness bound: it returns in milliseconds
    assert not thread.is_alive(), "matching hostile patterns did not return"
    assert len(results) == 2 * len(hostile_patterns())
    bound = 257 * (max(len(a) for a in ADDRESSES) + 1) * len(ADDRESSES)  # (pattern + 1) x (address + 1) x addresses
    for (pattern, budget), result in results.items():
        if isinstance(result, str):  # refused: malformed, or over the budget
            assert "address pattern" in result
            assert budget or "wildcards" not in result and "alternatives" not in result
        else:
            matched, work = result
            assert matched == [], pattern  # all end in a character no address has, or overflow a part
            assert work <= bound, (pattern, work)
    # the pattern, well formed, is matched without the budget, and cheaply
    matched, work = match_address_pattern(per_part_pattern(20), ADDRESSES, budget=False)
    assert matched == [] and work <= bound
    # and one group fewer and no X: a match, found the same way
    ok = per_part_pattern(len("fractalparamtemperature"))[:-1]
    assert match_address_pattern(ok, ADDRESSES, budget=False)[0] == ADDRESSES[:1]


def hostile_datagrams(count=50) -> list[bytes]:
    """`count` hostile datagrams (the issue's repro first); with python-osc's matcher each of
    the 16-group ones took about half a second, the 20-group one about 40 s."""
    kinds = [repro_pattern(16), per_part_pattern(16), "/fractal/param/" + "*t" * 20 + "X",
             "/fractal/param/{" + ",".join("t" * 40) + "}"]
    patterns = [repro_pattern(20)] + [kinds[i % len(kinds)] for i in range(count - 1)]
    return [raw_message(p, ("f", 0.5)) for p in patterns]


def test_hostile_datagrams_do_not_block_a_valid_message(make_server, caplog):
    """Issue 10, end to end: 50 hostile address patterns, then a valid message, which is applied;
    every hostile one is refused with a reason and the server keeps running."""
    server = make_server()
    with caplog.at_level("WARNING", logger="fractalmidi.web.osc"):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for d in hostile_datagrams(50):
                s.sendto(d, server.address)
                time.sleep(PACE_S)
            s.sendto(raw_message("/fractal/param/temperature", ("f", 0.5)), server.address)
        assert wait_for(lambda: server.params.temperature == 0.5), log_text(server)
    assert server.running
    refused = [m for _, _, m in server.log if m.startswith("refused ") and "address pattern" in m]
    assert refused, log_text(server)
    assert any("'{' without its '}'" in m for m in refused) or any("more than" in m for m in refused)
    assert all(m.split(": ", 1)[1] for m in refused)  # each with its reason
    assert any(r.levelno == logging.WARNING and "address pattern" in r.getMessage() for r in caplog.records)
    assert server.params.cfg == OSCParams().cfg and server.params.bars == OSCParams().bars


def test_python_osc_dispatcher_never_matches_patterns(make_server, monkeypatch):
    """Incoming patterns are matched by fractalmidi.web.osc; python-osc's regex matcher is never
    asked (it is exponential in `{...}` groups). Wildcard patterns still reach their handlers."""
    from pythonosc import dispatcher as dispatcher_module

    asked = []
    original = dispatcher_module.Dispatcher.handlers_for_address

    def spy(self, address_pattern):
        asked.append(address_pattern)
        return original(self, address_pattern)

    monkeypatch.setattr(dispatcher_module.Dispatcher, "handlers_for_address", spy)
    server = make_server()
    c = client_for(server)
    send(c, "/fractal/param/{temperature,cfg}", [1.5])
    send(c, "/fractal/param/[b]a?s", [4])
    send(c, "/fractal/latent/level*", [2.0])
    send(c, "/fractal/param/*", [1.25])  # bars refuses 1.25 (not whole), the others take it
    send(c, "/fractal/param/x*", [1.0])  # matches nothing: refused as unknown
    assert wait_for(lambda: "unknown address" in log_text(server)), log_text(server)
    p = server.params
    assert (p.temperature, p.cfg, p.bars, p.level0) == (1.25, 1.25, 4, [2.0])
    assert "refused /fractal/param/* (1.25): bars must be a whole number" in log_text(server)
    assert [a for a in asked if set(a) & set("*?[]{}")] == []


def test_bundles_of_patterns(make_server):
    """A bundle's messages are matched one by one; a hostile one among them is refused alone."""
    server = make_server()
    b = OscBundleBuilder(IMMEDIATELY)
    for address, value in [("/fractal/param/{temperature,cfg}", 0.75), (per_part_pattern(20), 0.5),
                           ("/fractal/param/b?rs", 12.0)]:
        m = OscMessageBuilder(address=address)
        m.add_arg(value, "f")
        b.add_content(m.build())
    send_raw(server, b.build().dgram)
    assert wait_for(lambda: server.params.bars == 12), log_text(server)
    p = server.params
    assert (p.temperature, p.cfg) == (0.75, 0.75)
    assert "more than 32 alternatives" in log_text(server)


def test_ranges_come_from_the_shared_limits(make_server, monkeypatch):
    """The OSC ranges are the shared ones (limits_fractalmidi, controls), read when a value is checked."""
    from fractalmidi import controls, limits_fractalmidi
    from fractalmidi.web import osc

    assert osc.TEMPERATURE_RANGE == limits_fractalmidi.TEMPERATURE
    assert osc.CFG_RANGE == limits_fractalmidi.GUIDANCE_SCALE
    assert osc.BARS_RANGE == (1, controls.MAX_INTERACTIVE_BARS)
    assert osc.LEVEL0_RANGE == (0.0, controls.DEFAULT_DENSITY_MAX)
    monkeypatch.setattr(limits_fractalmidi, "TEMPERATURE", (0.1, 1.0))
    monkeypatch.setattr(limits_fractalmidi, "GUIDANCE_SCALE", (0.0, 3.0))
    monkeypatch.setattr(controls, "MAX_INTERACTIVE_BARS", 32)
    monkeypatch.setattr(controls, "DEFAULT_DENSITY_MAX", 2.0)
    server = make_server()
    for address, value, reason in [("/fractal/param/temperature", 1.5, "out of range 0.1-1"),
                                   ("/fractal/param/cfg", 4.0, "out of range 0-3"),
                                   ("/fractal/param/bars", 64, "out of range 1-32"),
                                   ("/fractal/latent/level0", 3.0, "out of range 0-2")]:
        send_raw(server, raw_message(address, ("i" if isinstance(value, int) else "f", value)))
        assert wait_for(lambda: reason in log_text(server)), log_text(server)
    assert server.params == OSCParams()
    assert resample_level0([0.0, 3.0], 2) == [0.0, 2.0]


# ----------------------------------------------------------------------------- generation
def test_resample_level0():
    assert resample_level0([1.0], 3) == [1.0, 1.0, 1.0]
    assert resample_level0([0.0, 2.0], 5) == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert resample_level0([0.0, 1.0, 0.0], 2) == [0.0, 0.0]
    assert resample_level0([0.0, 8.0], 2) == [0.0, 4.0]  # clipped


def test_generate_writes_midi_and_replies(make_server, receiver, tmp_path):
    results = []
    server = make_server(on_result=lambda path, piece: results.append((path, piece)))
    c = client_for(server)
    send(c, "/fractal/param/bars", [4])
    send(c, "/fractal/latent/level0", [0.25, 1.0])  # resampled to 4 bars: 0.25, 0.5, 0.75, 1.0
    send(c, "/fractal/generate", [])
    path_args = receiver.wait("/fractal/result/path")
    assert path_args is not None, receiver.received
    done = receiver.wait("/fractal/result/done")
    assert done is not None

    path, piece = server.last_result
    assert path_args == (str(path),) and path.is_absolute() and path.is_file()
    assert path.parent == (tmp_path / "osc").resolve() and path.name.startswith("fractal_")
    assert path.suffix == ".mid"
    np.testing.assert_allclose(piece.bar_density(), [0.25, 0.5, 0.75, 1.0])  # level0 reached generate
    back, _ = read_midi(path)
    assert back.num_bars == 4 and len(back.notes) == len(piece.notes)
    assert receiver.of("/fractal/result/bars") == [(4,)]
    assert receiver.of("/fractal/result/notes") == [(len(piece.notes),)]
    assert done == (len(piece.notes),)
    notes = receiver.of("/fractal/note")
    assert len(notes) == len(piece.notes)  # paced: all arrived
    pitch, velocity, start_s, dur_s, step = notes[-1]
    times = piece.step_times()
    last = piece.notes[-1]
    assert (pitch, velocity, step) == (last[0], last[3], last[1])
    assert start_s == pytest.approx(times[last[1]], abs=1e-5)
    assert dur_s == pytest.approx(times[last[2]] - times[last[1]], abs=1e-5)
    assert wait_for(lambda: len(results) == 1) and results[0][0] == path


def test_generate_uses_snapshot_of_params(make_server, receiver):
    seen = []

    def generate(params):
        seen.append(params)
        return fake_generate(params)

    server = make_server(generate=generate)
    c = client_for(server)
    send(c, "/fractal/param/temperature", [0.3])
    send(c, "/fractal/param/bars", [2])
    send(c, "/fractal/generate", ["any", 1])  # a bang ignores its arguments
    send(c, "/fractal/param/temperature", [1.7])
    assert receiver.wait("/fractal/result/done") is not None
    assert seen[0].temperature == pytest.approx(0.3) and seen[0].bars == 2 and seen[0].level0 is None


def test_queue_refuses_when_busy(make_server, receiver):
    """One generation runs (held until the test releases it), max_queue wait, the rest are refused."""
    max_queue, requests = 3, 10
    started, release = threading.Event(), threading.Event()

    def held_generate(params):
        started.set()
        assert release.wait(TIMEOUT_S), "the test never released the generation"
        return fake_generate(params)

    server = make_server(generate=held_generate, max_queue=max_queue)
    c = client_for(server)
    try:
        send(c, "/fractal/param/bars", [1])
        send(c, "/fractal/generate", [])
        assert started.wait(TIMEOUT_S), log_text(server)  # the first one runs, and holds the worker
        for _ in range(requests - 1):
            send(c, "/fractal/generate", [])

        def busy():
            return [m for _, _, m in server.log if "busy" in m]

        refused = requests - 1 - max_queue
        assert wait_for(lambda: len(busy()) >= refused and server.queued == max_queue), log_text(server)
        assert len(busy()) == refused and server.queued == max_queue, log_text(server)
    finally:
        release.set()
    accepted = 1 + max_queue
    assert receiver.wait_until(lambda: len(receiver.of("/fractal/result/done")) >= accepted
                               and len(receiver.of("/fractal/error")) >= refused), receiver.received
    assert len(receiver.of("/fractal/result/done")) == accepted
    errors = [args[0] for args in receiver.of("/fractal/error")]
    assert len(errors) == refused and all("busy" in e for e in errors)
    assert wait_for(lambda: server.queued == 0) and server.running


def test_generate_error_reported_and_worker_survives(make_server, receiver):
    calls = []

    def flaky_generate(params):
        calls.append(params)
        if len(calls) == 1:
            raise RuntimeError("model exploded")
        return fake_generate(params)

    server = make_server(generate=flaky_generate, on_result=lambda path, piece: 1 / 0)
    c = client_for(server)
    send(c, "/fractal/param/bars", [2])
    send(c, "/fractal/generate", [])
    error = receiver.wait("/fractal/error")
    assert error is not None and "model exploded" in error[0]
    assert server.running
    send(c, "/fractal/generate", [])  # works, and a failing on_result is only logged
    assert receiver.wait("/fractal/result/done") is not None
    assert server.last_result is not None
    assert wait_for(lambda: "on_result failed" in log_text(server)), log_text(server)  # called after the reply
    assert server.running


def test_stop_releases_the_port_and_restarts(make_server, receiver):
    server = make_server()
    port = server.address[1]
    server.stop()
    assert not server.running
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", port))
    server.start()
    assert server.running
    send(client_for(server), "/fractal/param/bars", [1])
    send(client_for(server), "/fractal/generate", [])
    assert receiver.wait("/fractal/result/done") is not None


# ----------------------------------------------------------------------------- liblo-tools
def require_liblo():
    missing = [tool for tool in ("oscsend", "oscdump") if shutil.which(tool) is None]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} not found: install liblo-tools "
            "(apt-get install -y liblo-tools) to run the OSC peer tests"
        )


def oscsend(port, address, types="", *values):
    subprocess.run(["oscsend", "127.0.0.1", str(port), address, types, *map(str, values)],
                   check=True, timeout=TIMEOUT_S)


def test_oscsend_sets_params(make_server):
    require_liblo()
    server = make_server()
    port = server.address[1]
    oscsend(port, "/fractal/param/temperature", "f", 0.5)
    assert wait_for(lambda: server.params.temperature == 0.5)
    oscsend(port, "/fractal/param/bars", "i", 12)
    oscsend(port, "/fractal/latent/level0", "fff", 0.5, 1.0, 1.5)
    oscsend(port, "/fractal/param/cfg", "s", "loud")  # refused
    assert wait_for(lambda: "string" in log_text(server)), log_text(server)
    p = server.params
    assert p.bars == 12 and p.level0 == [0.5, 1.0, 1.5] and p.cfg == 1.0
    assert server.running


def test_oscdump_receives_result(tmp_path):
    require_liblo()
    reply_port = free_udp_port()
    dump = subprocess.Popen(["oscdump", "-L", str(reply_port)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in dump.stdout], daemon=True).start()

    def read_until(word, timeout):
        end = time.monotonic() + timeout
        seen = []
        while time.monotonic() < end:
            try:
                line = lines.get(timeout=0.1)
            except queue.Empty:
                continue
            seen.append(line)
            if word in line:
                return line
        pytest.fail(f"oscdump did not print {word!r} within {timeout} s; got {seen}")

    server = FractalOSCServer(fake_generate, port=0, reply_port=reply_port, out_dir=tmp_path / "osc").start()
    try:
        # oscdump prints nothing when it is ready: probe it until a probe arrives
        end = time.monotonic() + TIMEOUT_S
        while True:
            oscsend(reply_port, "/probe")
            try:
                if "/probe" in lines.get(timeout=0.2):
                    break
            except queue.Empty:
                pass
            assert time.monotonic() < end, "oscdump never started listening"
        port = server.address[1]
        oscsend(port, "/fractal/param/bars", "i", 2)
        oscsend(port, "/fractal/generate")
        line = read_until("/fractal/result/path", timeout=TIMEOUT_S)
        path = str(server.last_result[0]) if server.last_result else "?"
        assert f'"{path}"' in line
        assert "/fractal/result/done" in read_until("/fractal/result/done", timeout=TIMEOUT_S)
    finally:
        server.stop()
        dump.terminate()
        dump.wait(timeout=TIMEOUT_S)
