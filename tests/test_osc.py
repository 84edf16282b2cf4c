"""The OSC server (fractalmidi/osc.py) driven by python-osc and by liblo-tools' oscsend / oscdump.

Every server listens on a free port of 127.0.0.1; `generate` is a fake that builds a small
piece whose bar densities follow the level0 shape it is given. UDP drops packets in unpaced
bursts, so tests pace their sends or count only what arrived.
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
from pythonosc.osc_server import ThreadingOSCUDPServer
from pythonosc.udp_client import SimpleUDPClient

from fractalmidi import Piece, read_midi
from fractalmidi.osc import FractalOSCServer, OSCParams, resample_level0

PACE_S = 0.0005  # between sends, so the kernel does not drop them


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


def wait_for(condition, timeout=10.0, interval=0.01):
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
    """A python-osc server on a free port that records every (address, args) it receives."""

    def __init__(self):
        self.messages = queue.Queue()
        self.received = []
        dispatcher = Dispatcher()
        dispatcher.set_default_handler(lambda address, *args: self.messages.put((address, args)))
        self.server = ThreadingOSCUDPServer(("127.0.0.1", 0), dispatcher)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def wait(self, address, timeout=10.0):
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


def send(client, address, args, settle=True):
    """Send one message (args as a list; [] for none) and give the server a moment."""
    client.send_message(address, args)
    time.sleep(0.05 if settle else PACE_S)


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
    assert server.params.bars == 16
    send(c, "/fractal/param/{temperature,cfg}", [2.0])  # an OSC address pattern
    assert server.params.temperature == 2.0 and server.params.cfg == 2.0
    send(c, "/fractal/latent/level0/clear", [])
    assert server.params.level0 is None
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
    before = server.params
    with caplog.at_level("WARNING", logger="fractalmidi.osc"):
        send_raw(server, datagram)
        assert wait_for(lambda: reason in log_text(server), timeout=3), log_text(server)
    assert server.params == before
    assert any(r.name == "fractalmidi.osc" and r.levelno == logging.WARNING and reason in r.getMessage()
               for r in caplog.records)
    assert server.running


def test_all_refusals_then_still_serving(make_server):
    """Every bad kind in a row (paced), then a good message is still applied."""
    server = make_server()
    c = client_for(server)
    for _, datagram, _ in BAD_MESSAGES:
        send_raw(server, datagram)
        time.sleep(0.002)
    time.sleep(0.1)
    assert server.params == OSCParams()
    assert server.running
    send(c, "/fractal/param/temperature", [1.5])
    assert server.params.temperature == 1.5


def test_refusal_logging_is_bounded(make_server):
    """Past 50 refusals in one second they are counted, and the count is logged afterwards."""
    server = make_server()
    c = client_for(server)
    for _ in range(200):
        c.send_message("/fractal/param/cfg", "x")
        time.sleep(PACE_S)
    time.sleep(1.1)
    send(c, "/fractal/nowhere", [])  # the next second's first refusal reports the count
    refused = [m for _, _, m in server.log if m.startswith("refused /fractal/param/cfg")]
    assert 1 <= len(refused) <= 100
    assert "more refusals in the last second were not logged" in log_text(server)


def test_flood_dropped_and_logged_once(make_server):
    server = make_server(max_messages_per_second=500)
    c = client_for(server)
    rng = np.random.default_rng(0)
    for i in range(3000):  # unpaced: many never arrive, many that do are over the limit
        c.send_message("/fractal/param/temperature", float(rng.uniform(-5, 5)))
    time.sleep(1.2)  # the flood's second is over
    assert server.running
    p = server.params
    assert 0.1 <= p.temperature <= 2.0 and 0.0 <= p.cfg <= 10.0
    flood_lines = [m for _, _, m in server.log if m.startswith("flood")]
    assert 1 <= len(flood_lines) <= 3, flood_lines  # once per second, not per message
    assert server.dropped_messages > 0
    send(c, "/fractal/param/temperature", [0.7])
    assert wait_for(lambda: abs(server.params.temperature - 0.7) < 1e-6, timeout=3)


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
    send(c, "/fractal/param/cfg", [4.25])
    assert wait_for(lambda: server.params.cfg == 4.25, timeout=5)
    p = server.params
    assert server.running
    assert 0.1 <= p.temperature <= 2.0 and 0.0 <= p.cfg <= 10.0 and 1 <= p.bars <= 256
    assert p.level0 is None or all(0.0 <= v <= 4.0 for v in p.level0)


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
    max_queue = 3

    def slow_generate(params):
        time.sleep(0.25)
        return fake_generate(params)

    server = make_server(generate=slow_generate, max_queue=max_queue)
    c = client_for(server)
    send(c, "/fractal/param/bars", [1])
    for _ in range(10):
        c.send_message("/fractal/generate", [])
        time.sleep(0.002)
    assert wait_for(lambda: "busy" in log_text(server), timeout=2)
    assert server.queued <= max_queue
    busy = [m for _, _, m in server.log if "busy" in m]
    accepted = 10 - len(busy)
    # one runs at once, max_queue wait; everything else is refused
    assert max_queue <= accepted <= max_queue + 1, log_text(server)
    for _ in range(accepted):
        assert receiver.wait("/fractal/result/done", timeout=5) is not None
    assert len(receiver.of("/fractal/result/done")) == accepted
    errors = [args[0] for args in receiver.of("/fractal/error")]
    assert len(errors) == len(busy) and all("busy" in e for e in errors)
    assert server.running and server.queued == 0


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
    assert server.running and server.last_result is not None
    assert "on_result failed" in log_text(server)


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
                   check=True, timeout=10)


def test_oscsend_sets_params(make_server):
    require_liblo()
    server = make_server()
    port = server.address[1]
    oscsend(port, "/fractal/param/temperature", "f", 0.5)
    assert wait_for(lambda: server.params.temperature == 0.5, timeout=3)
    oscsend(port, "/fractal/param/bars", "i", 12)
    oscsend(port, "/fractal/latent/level0", "fff", 0.5, 1.0, 1.5)
    oscsend(port, "/fractal/param/cfg", "s", "loud")  # refused
    assert wait_for(lambda: "string" in log_text(server), timeout=3)
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
        end = time.monotonic() + 10
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
        line = read_until("/fractal/result/path", timeout=10)
        path = str(server.last_result[0]) if server.last_result else "?"
        assert f'"{path}"' in line
        assert "/fractal/result/done" in read_until("/fractal/result/done", timeout=10)
    finally:
        server.stop()
        dump.terminate()
        dump.wait(timeout=5)
