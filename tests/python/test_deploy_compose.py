"""deploy/compose's cluster as a user runs it: `up -d` forms the cluster by
itself, each node takes its id from its host name and finds its peers
through the DNS pattern Kubernetes uses; the image runs as a non-root user
and its HEALTHCHECK passes; a quorum queue keeps every confirmed message
when one container is killed, and the node rejoins when started again;
failover through a kill, a network cut and the queue leader's kill loses no
confirmed message; a rolling restart with clients running loses none
either (its duration is reported); the process runs as the image's user and
the data volumes survive `down` and `up`. (The seed's scenarios run against
the same cluster in test_scenarios.py.)"""
import json
import subprocess
import time

import pika
import pytest

from compose import READY_DEADLINE, ComposeCluster, http_get
from conftest import report, wait_for
from load import Consumer, Publisher, drain


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


def test_the_process_runs_as_the_image_user_and_data_survives_down_and_up(cluster):
    for i in range(3):
        status = cluster.exec(i, "cat", "/proc/1/status").stdout
        uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
        assert set(uids) == {"999"}, status
    conn = pika.BlockingConnection(cluster.params(0))
    ch = conn.channel()
    ch.queue_declare("kept", durable=True)
    ch.confirm_delivery()
    for i in range(50):
        ch.basic_publish("", "kept", str(i).encode(), pika.BasicProperties(delivery_mode=2))
    conn.close()

    cluster.compose("down", "-t", "30")  # containers and network go; volumes stay
    assert cluster.compose("ps", "-q").stdout.strip() == ""
    cluster.compose("up", "-d")
    cluster.wait_ready()
    # Right after a whole-cluster restart the queue's new leader may answer
    # basic.get before it has applied its log again (seen once: empty):
    # poll, bounded, until the 50 are back.
    got = []

    def all_back():
        try:
            got.extend(drain(cluster.params(2), "kept"))
        except pika.exceptions.AMQPError:
            return False
        return len(got) >= 50

    wait_for("the 50 messages back after down and up", all_back, timeout=READY_DEADLINE, interval=0.2)
    assert got == list(range(50))


def wait_progress(what, client_list, more, timeout=READY_DEADLINE):
    """Waits until `client_list` has grown by `more` entries."""
    start = len(client_list)
    wait_for(what, lambda: len(client_list) >= start + more, timeout=timeout, interval=0.1)


def check_no_loss(pub, cons, left_over=()):
    confirmed = set(pub.confirmed)
    seen = cons.received + list(left_over)
    missing = confirmed - set(seen)
    assert not missing, f"{len(missing)} confirmed messages lost: {sorted(missing)[:20]}"
    return len(seen) - len(set(seen))


def test_failover_a_killed_node_and_a_cut_off_node_then_the_queue_leader(cluster):
    conn = pika.BlockingConnection(cluster.params(0))
    conn.channel().queue_declare("numbers", durable=True)  # quorum: deploy/compose/warren.toml
    conn.close()
    leader = wait_for("the queue's leader", lambda: cluster.queue_leader("numbers", 0))
    home = leader - 1  # warren-N is node N+1
    a, b = [i for i in range(3) if i != home]
    pub = Publisher(cluster.params, [home], "numbers")
    cons = Consumer(cluster.params, [home], "numbers")
    pub.start()
    cons.start()
    try:
        wait_progress("publishing", pub.confirmed, 200)
        wait_progress("consuming", cons.received, 200)

        # One node killed: the other two go on.
        cluster.kill9(f"warren-{a}")
        wait_progress("publishing with warren-%d down" % a, pub.confirmed, 500)
        wait_progress("consuming with warren-%d down" % a, cons.received, 500)
        cluster.compose("start", f"warren-{a}")
        wait_for(f"warren-{a} ready again", lambda: cluster.ready(a), timeout=READY_DEADLINE, interval=0.2)

        # Another cut off the network: the majority goes on.
        cluster.disconnect(b)
        wait_progress("publishing with warren-%d cut off" % b, pub.confirmed, 500)
        wait_progress("consuming with warren-%d cut off" % b, cons.received, 500)
        cluster.reconnect(b)
        for i in range(3):
            wait_for(f"warren-{i} ready after the cut", lambda: cluster.ready(i), timeout=READY_DEADLINE,
                     interval=0.2)
        wait_progress("publishing after healing", pub.confirmed, 200)
    finally:
        pub.stop()
        cons.stop()
    assert pub.confirmed, pub.last_error

    # The leader (the queue's home) killed and started again: nothing lost.
    cluster.kill9(f"warren-{home}")
    cluster.compose("start", f"warren-{home}")
    cluster.wait_ready()
    left = wait_for("the queue to be drained", lambda: _drain_or_none(cluster, "numbers"),
                    timeout=READY_DEADLINE, interval=0.5)
    duplicates = check_no_loss(pub, cons, left[0])
    report(f"compose failover: {len(pub.confirmed)} confirmed, none lost, {duplicates} duplicates, "
           f"publisher reconnects {pub.reconnects}, consumer reconnects {cons.reconnects}")


def _drain_or_none(cluster, queue):
    try:
        return (drain(cluster.params(0), queue),)
    except pika.exceptions.AMQPError:
        return None


def test_rolling_restart_with_a_publisher_and_a_consumer_running(cluster):
    conn = pika.BlockingConnection(cluster.params(0))
    conn.channel().queue_declare("rolling", durable=True)
    conn.close()
    pub = Publisher(cluster.params, [0, 1, 2], "rolling")
    cons = Consumer(cluster.params, [1, 2, 0], "rolling")
    pub.start()
    cons.start()
    try:
        wait_progress("publishing", pub.confirmed, 200)
        wait_progress("consuming", cons.received, 200)
        started = time.monotonic()
        for i in (2, 1, 0):  # as a StatefulSet rolls: highest ordinal first
            cluster.exec(i, "warren", "drain")  # the preStop hook
            cluster.compose("restart", "-t", "30", f"warren-{i}")
            wait_for(f"warren-{i} ready after its restart", lambda: cluster.ready(i),
                     timeout=READY_DEADLINE, interval=0.2)
        took = time.monotonic() - started
        wait_progress("publishing after the restart", pub.confirmed, 200)
    finally:
        pub.stop()
    try:
        wait_for("the consumer to get every confirmed message",
                 lambda: set(pub.confirmed) <= set(cons.received), timeout=READY_DEADLINE, interval=0.2)
    finally:
        cons.stop()
    duplicates = check_no_loss(pub, cons)
    report(f"compose rolling restart of 3 nodes: {took:.1f} s; {len(pub.confirmed)} confirmed, none lost, "
           f"{duplicates} duplicates; publisher reconnects {pub.reconnects}, consumer reconnects {cons.reconnects}")
