"""deploy/compose's cluster as a user runs it: `up -d` forms the cluster by
itself, each node takes its id from its host name and finds its peers
through the DNS pattern Kubernetes uses; the image runs as a non-root user
and its HEALTHCHECK passes; a quorum queue keeps every confirmed message
when one container is killed, and the node rejoins when started again.
(The seed's scenarios run against the same cluster in test_scenarios.py.)"""
import json
import subprocess

import pika
import pytest

from compose import READY_DEADLINE, ComposeCluster, http_get
from conftest import wait_for


@pytest.fixture
def cluster(compose_image):
    c = ComposeCluster(compose_image)
    try:
        c.start()
        yield c
    finally:
        c.stop()


def inspect(c):
    ids = c.compose("ps", "-q").stdout.split()
    out = subprocess.run(["docker", "inspect", *ids], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_nodes_take_their_ids_from_host_names_and_the_image_is_healthy(cluster):
    leaders = set()
    for i in range(3):
        assert http_get(cluster.http_ports[i], "/health") == (200, {"status": "ok"})
        status, body = http_get(cluster.http_ports[i], "/ready")
        assert status == 200 and body["ready"] is True
        assert body["node"] == i + 1, body  # warren-0 is node 1, ...
        leaders.add(body["leader"])
    assert len(leaders) == 1 and leaders <= {1, 2, 3}

    containers = inspect(cluster)
    assert sorted(c["Config"]["Hostname"] for c in containers) == ["warren-0", "warren-1", "warren-2"]
    for c in containers:
        assert c["Config"]["User"] == "warren:warren"
    def healthy():
        return all(c["State"].get("Health", {}).get("Status") == "healthy" for c in inspect(cluster))
    wait_for("every container's HEALTHCHECK to pass", healthy, timeout=READY_DEADLINE, interval=1.0)


def test_a_quorum_queue_keeps_confirmed_messages_when_a_container_is_killed(cluster):
    conn = pika.BlockingConnection(cluster.params(1))
    ch = conn.channel()
    # Durable and declared without x-queue-type: quorum (deploy/compose/warren.toml).
    ch.queue_declare("orders", durable=True)
    ch.confirm_delivery()
    for i in range(100):
        ch.basic_publish("", "orders", f"order-{i}".encode(),
                         pika.BasicProperties(delivery_mode=2), mandatory=True)
    conn.close()

    cluster.kill9("warren-0")
    wait_for("warren-0 to be down", lambda: http_get(cluster.http_ports[0], "/health") is None)

    got = []

    def drained():
        """Takes what the survivors give; done once the queue is empty."""
        try:
            conn = pika.BlockingConnection(cluster.params(2))
        except pika.exceptions.AMQPError:
            return False
        try:
            ch = conn.channel()
            while True:
                method, _, body = ch.basic_get("orders", auto_ack=True)
                if method is None:
                    return len(got) >= 100
                got.append(body.decode())
        except pika.exceptions.AMQPError:
            return False
        finally:
            if conn.is_open:
                conn.close()

    wait_for("the survivors to give back every confirmed message", drained,
             timeout=READY_DEADLINE, interval=0.5)
    assert got == [f"order-{i}" for i in range(100)]

    cluster.compose("start", "warren-0")
    wait_for("warren-0 ready again", lambda: cluster.ready(0), timeout=READY_DEADLINE, interval=0.2)
