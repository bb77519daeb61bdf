"""Fixtures: a fresh `warren` node per test, and tutorial programs as processes.

Every wait polls for a named condition with a deadline; nothing sleeps to
synchronise. Every process started here is killed when the test ends."""
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TUTORIAL = Path(__file__).resolve().parent / "tutorial"
WARREN = os.environ.get("WARREN_BIN", str(ROOT / "target" / "debug" / "warren"))
DEADLINE = 30.0


def wait_for(what, predicate, timeout=DEADLINE, interval=0.02):
    """Polls `predicate` until it returns a truthy value or `timeout` passes."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Node:
    """A `warren server` process on a free port with its own data dir."""

    def __init__(self, data_dir: Path, log: Path, extra=()):
        self.data_dir = data_dir
        self.log = log
        self.extra = list(extra)
        self.proc = None
        self.port = None

    def start(self):
        return self.spawn().wait_ready()

    def spawn(self):
        """Starts the process without waiting (cluster nodes wait for each other)."""
        addr_file = self.data_dir / "amqp.addr"
        if addr_file.exists():
            addr_file.unlink()
        # Cluster nodes prove a shared secret on their cluster port.
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"),
                   WARREN_CLUSTER_SECRET=CLUSTER_SECRET)
        self.proc = subprocess.Popen(
            [WARREN, "server", "--amqp-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--data-dir", str(self.data_dir), *self.extra],
            stdout=open(self.log, "ab"),
            stderr=subprocess.STDOUT,
            env=env,
        )
        return self

    def wait_ready(self):
        addr_file = self.data_dir / "amqp.addr"

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"warren exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            return addr_file.exists() and addr_file.read_text().strip()

        addr = wait_for("warren to listen", ready)
        self.port = int(addr.rsplit(":", 1)[1])
        return self

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=DEADLINE)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=DEADLINE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def env(self):
        return dict(os.environ, AMQP_HOST="127.0.0.1", AMQP_PORT=str(self.port), PYTHONUNBUFFERED="1")

    def params(self):
        import pika
        return pika.ConnectionParameters("127.0.0.1", self.port)


CLUSTER_SECRET = "pika-scenarios-cluster-secret"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ClusterNodes:
    """Three `warren server` processes forming one cluster on loopback. It
    stands in for a Node: `port` is node 1's, and each program started gets
    the next node in turn, so producers and consumers spread over the three."""

    def __init__(self, tmp_path: Path, size=3, extra=()):
        ports = [free_port() for _ in range(size)]
        peers = ",".join(f"{i + 1}=127.0.0.1:{p}" for i, p in enumerate(ports))
        self.nodes = [
            Node(tmp_path / f"data{i + 1}", tmp_path / f"warren{i + 1}.log",
                 ["--node-id", str(i + 1), "--cluster-listen", f"127.0.0.1:{ports[i]}", "--peers", peers,
                  *extra])
            for i in range(size)
        ]
        self.turn = 0

    @property
    def port(self):
        return self.nodes[0].port

    def start(self):
        for n in self.nodes:
            n.spawn()
        for n in self.nodes:
            n.wait_ready()
        return self

    def params(self):
        return self.nodes[0].params()

    def env(self):
        n = self.nodes[self.turn % len(self.nodes)]
        self.turn += 1
        return n.env()

    def kill9(self):
        for n in self.nodes:
            n.kill9()

    def stop(self):
        for n in self.nodes:
            n.stop()


class Program:
    """A tutorial program running as its own process; its stdout lines are collected."""

    def __init__(self, node: Node, script: str, *args: str):
        self.name = f"{script} {' '.join(args)}".strip()
        self.proc = subprocess.Popen(
            [sys.executable, "-u", str(TUTORIAL / script), *args],
            cwd=str(TUTORIAL),
            env=node.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines = []
        self._q = queue.Queue()
        self._t = threading.Thread(target=self._pump, daemon=True)
        self._t.start()

    def _pump(self):
        for line in self.proc.stdout:
            self._q.put(line.rstrip("\n"))

    def _drain(self):
        while True:
            try:
                self.lines.append(self._q.get_nowait())
            except queue.Empty:
                return

    def output(self):
        self._drain()
        return list(self.lines)

    def wait_line(self, text, count=1, timeout=DEADLINE):
        """Waits until `text` appears in at least `count` lines."""
        def seen():
            self._drain()
            n = sum(1 for line in self.lines if text in line)
            if n < count and self.proc.poll() is not None:
                self._drain()
                raise AssertionError(f"{self.name} exited ({self.proc.returncode}): {self.lines}")
            return n >= count
        wait_for(f"{count}x {text!r} from {self.name} (got {self.lines})", seen, timeout)
        return self.output()

    def finish(self, timeout=DEADLINE):
        self.proc.wait(timeout=timeout)
        self._t.join(timeout=timeout)
        self._drain()
        assert self.proc.returncode == 0, f"{self.name} failed: {self.lines}"
        return self.lines

    def kill(self, sig=signal.SIGKILL):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=DEADLINE)


# Figures tests measure (a restart's duration, reconnects, duplicates),
# printed at the end of the run.
MEASURED = []


def report(line):
    MEASURED.append(line)


def pytest_terminal_summary(terminalreporter):
    if MEASURED:
        terminalreporter.section("measured")
        for line in MEASURED:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def compose_image():
    """deploy/docker's image of the debug binary, built once, removed at the end."""
    import compose
    image = compose.build_image()
    yield image
    compose.remove_image()


@pytest.fixture
def node(tmp_path):
    n = Node(tmp_path / "data", tmp_path / "warren.log").start()
    yield n
    n.stop()


@pytest.fixture
def run(node):
    """Starts tutorial programs; kills whatever is still running at the end."""
    started = []

    def start(script, *args):
        p = Program(node, script, *args)
        started.append(p)
        return p

    yield start
    for p in started:
        p.kill()
