"""Warren nodes on loopback for the benchmark scripts: start a cluster from a
static peer list, kill -9 and restart one node, ask a node for its status,
stop everything. Shared by compare.py, idle_groups.py and quorum_ops.py."""
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def wait_port(port, timeout=60):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listening on {port} after {timeout}s")


def rss_of(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cpu_seconds(pid):
    """User + system CPU time a process has used."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


class Sampler:
    """Peak RSS of a process, sampled every 100 ms."""

    def __init__(self, pid):
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_of(self.pid))
            self._stop.wait(0.1)

    def stop(self):
        self._stop.set()
        self._t.join()
        return self.peak


class WarrenNodes:
    """`n` Warren nodes: node i (1-based) listens for AMQP on
    amqp_base + i - 1 and for its peers on cluster_base + i - 1, keeps its
    data under base/node{i} and logs to base/node{i}.log."""

    def __init__(self, binary, base, amqp_base, cluster_base, secret, n=3, extra=()):
        self.binary, self.base, self.n = Path(binary), Path(base), n
        self.amqp_base, self.cluster_base = amqp_base, cluster_base
        self.extra = list(extra)
        self.env = dict(os.environ, RUST_LOG="warn", WARREN_CLUSTER_SECRET=secret)
        self.procs = {}

    def amqp_port(self, i):
        return self.amqp_base + i - 1

    def cluster_addr(self, i):
        return f"127.0.0.1:{self.cluster_base + i - 1}"

    def url(self, i):
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port(i)}/%2f"

    def start(self, fresh=True):
        if fresh:
            shutil.rmtree(self.base, ignore_errors=True)
        self.base.mkdir(parents=True, exist_ok=True)
        for i in range(1, self.n + 1):
            self.start_node(i, wait=False)
        for i in range(1, self.n + 1):
            wait_port(self.amqp_port(i))

    def start_node(self, i, wait=True):
        peers = ",".join(f"{j}={self.cluster_addr(j)}" for j in range(1, self.n + 1))
        self.procs[i] = subprocess.Popen(
            [str(self.binary), "server", "--node-id", str(i), "--amqp-listen", f"127.0.0.1:{self.amqp_port(i)}", "--http-listen", "off",
             "--cluster-listen", self.cluster_addr(i), "--peers", peers, "--data-dir", str(self.base / f"node{i}"),
             *self.extra],
            stdout=open(self.base / f"node{i}.log", "ab"), stderr=subprocess.STDOUT, env=self.env)
        if wait:
            wait_port(self.amqp_port(i))

    def kill(self, i):
        """kill -9 node i and reap it."""
        p = self.procs.pop(i)
        p.kill()
        p.wait(timeout=30)

    def pids(self):
        return [p.pid for _, p in sorted(self.procs.items())]

    def pid(self, i):
        return self.procs[i].pid

    def cli(self, *args, server=1):
        """A `warren` admin command through node `server`'s cluster port, its JSON output parsed."""
        out = subprocess.run([str(self.binary), *args, "--json", "--server", self.cluster_addr(server)],
                             capture_output=True, text=True, timeout=30, env=self.env, check=True)
        return json.loads(out.stdout)

    def node_status(self, i):
        """Node i's own entry of `warren cluster status`."""
        return [m for m in self.cli("cluster", "status", server=i)["members"] if m["id"] == i][0]

    def stop(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=30)
        self.procs = {}
