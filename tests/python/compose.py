"""The docker compose cluster of deploy/compose, as the scenario tests use a
node: `port` is warren-0's published AMQP port, `env()` hands each program
the next node in turn, `kill9()`/`start()` kill -9 and restart every
container. Each instance is its own compose project (unique name, ports,
network and volumes), and `stop()` removes all of it, also after a failure.

The image is built once per test session from the debug binary `cargo test`
built (deploy/docker/build-image.sh), tagged for the tests, and removed at
the end."""
import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pika

from conftest import ROOT, WARREN, free_port, wait_for

COMPOSE_FILE = ROOT / "deploy" / "compose" / "docker-compose.yml"
IMAGE = "warren:pytest"
SECRET = "compose-test-cluster-secret-0123456789"
USER, PASSWORD = "app", "app-password"
# First formation includes container start-up; bounded all the same.
READY_DEADLINE = 120.0
NODES = 3


def compose_command():
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return ["docker", "compose"]


def build_image():
    out = subprocess.run(
        [str(ROOT / "deploy" / "docker" / "build-image.sh"), "--binary", WARREN, "--tag", IMAGE],
        capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, f"build-image.sh failed:\n{out.stdout}\n{out.stderr}"
    return IMAGE


def remove_image():
    subprocess.run(["docker", "rmi", "-f", IMAGE], capture_output=True, timeout=120)


def http_get(port, path, timeout=2.0):
    """(status, parsed JSON body) of GET 127.0.0.1:port/path, or None."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")
    except (OSError, ValueError):
        return None


class ComposeCluster:
    _count = 0

    def __init__(self, image=IMAGE):
        ComposeCluster._count += 1
        self.project = f"warrentest{os.getpid()}x{ComposeCluster._count}"
        self.env_vars = dict(
            os.environ,
            WARREN_IMAGE=image,
            WARREN_CLUSTER_SECRET=SECRET,
            WARREN_DEFAULT_USER=USER,
            WARREN_DEFAULT_PASS=PASSWORD,
            COMPOSE_PROJECT_NAME=self.project,
        )
        self.pick_ports()
        self.turn = 0
        self.started = False

    def pick_ports(self):
        """Six distinct free ports (two picks of `free_port` can repeat one)."""
        ports = []
        while len(ports) < 2 * NODES:
            p = free_port()
            if p not in ports:
                ports.append(p)
        self.amqp_ports, self.http_ports = ports[:NODES], ports[NODES:]
        for i in range(NODES):
            self.env_vars[f"WARREN_PORT_{i + 1}"] = str(self.amqp_ports[i])
            self.env_vars[f"WARREN_HTTP_{i + 1}"] = str(self.http_ports[i])

    def compose(self, *args, timeout=180, check=True):
        out = subprocess.run(
            [*compose_command(), "-f", str(COMPOSE_FILE), "-p", self.project, *args],
            env=self.env_vars, capture_output=True, text=True, timeout=timeout)
        if check:
            assert out.returncode == 0, f"compose {args} failed:\n{out.stdout}\n{out.stderr}\n{self.logs()}"
        return out

    def logs(self):
        out = subprocess.run(
            [*compose_command(), "-f", str(COMPOSE_FILE), "-p", self.project, "logs", "--no-color", "--tail", "60"],
            env=self.env_vars, capture_output=True, text=True, timeout=60)
        return out.stdout[-8000:]

    @property
    def port(self):
        return self.amqp_ports[0]

    def params(self, i=0):
        # Bounded: a node cut off the network must not hang a client.
        return pika.ConnectionParameters(
            "127.0.0.1", self.amqp_ports[i], credentials=pika.PlainCredentials(USER, PASSWORD),
            connection_attempts=1, socket_timeout=3, blocked_connection_timeout=10, heartbeat=5)

    def start(self):
        self.started = True
        # A port found free can be taken before docker publishes it (docker
        # may hold it for a project being torn down): new ports, a few times.
        for attempt in range(3):
            out = self.compose("up", "-d", check=False)
            if out.returncode == 0:
                break
            taken = "port is already allocated" in out.stdout + out.stderr
            assert taken and attempt < 2, f"compose up failed:\n{out.stdout}\n{out.stderr}\n{self.logs()}"
            self.compose("down", "-v", "--remove-orphans", check=False)
            self.pick_ports()
        self.wait_ready()
        return self

    def ready(self, i):
        r = http_get(self.http_ports[i], "/ready")
        return r is not None and r[0] == 200 and r[1]

    def wait_ready(self):
        for i in range(NODES):
            try:
                wait_for(f"warren-{i} /ready", lambda: self.ready(i), timeout=READY_DEADLINE, interval=0.2)
            except AssertionError as e:
                raise AssertionError(f"{e}\n{self.logs()}") from None
            # AMQP answers as well (the published port reaches the node).
            wait_for(f"warren-{i} AMQP", lambda: self._amqp_ok(i), timeout=READY_DEADLINE, interval=0.2)

    def _amqp_ok(self, i):
        try:
            pika.BlockingConnection(self.params(i)).close()
            return True
        except pika.exceptions.AMQPError:
            return False

    def env(self):
        i = self.turn % NODES
        self.turn += 1
        return dict(os.environ, AMQP_HOST="127.0.0.1", AMQP_PORT=str(self.amqp_ports[i]),
                    AMQP_USER=USER, AMQP_PASSWORD=PASSWORD, PYTHONUNBUFFERED="1")

    def kill9(self, *services):
        self.compose("kill", "-s", "SIGKILL", *services)

    def container(self, i):
        return self.compose("ps", "-q", f"warren-{i}").stdout.strip()

    @property
    def network(self):
        return f"{self.project}_warren"

    def disconnect(self, i):
        """Cuts warren-i off the cluster's network (and its published ports)."""
        out = subprocess.run(["docker", "network", "disconnect", self.network, self.container(i)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr

    def reconnect(self, i):
        """Puts warren-i back, under the DNS names its peers know it by."""
        out = subprocess.run(
            ["docker", "network", "connect", "--alias", f"warren-{i}",
             "--alias", f"warren-{i}.warren-headless.warren.svc.cluster.local",
             self.network, self.container(i)],
            capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr

    def exec(self, i, *cmd):
        """Runs `cmd` in warren-i (with the container's environment)."""
        return self.compose("exec", "-T", f"warren-{i}", *cmd)

    def queue_leader(self, queue, via):
        """The node id leading quorum queue `queue`, as warren-`via` reports it."""
        out = self.exec(via, "warren", "queues", "status", "--json", "--server", "127.0.0.1:25672")
        leaders = {r["node"] for r in json.loads(out.stdout) if r["queue"] == queue and r["state"] == "leader"}
        return leaders.pop() if len(leaders) == 1 else None

    def stop(self):
        if self.started:
            self.compose("down", "-v", "--remove-orphans", "-t", "10", check=False)
            self.started = False
