"""Quorum queues as pika code uses them: messages go through the queue's Raft
group, on one node and on a three-node cluster, and what was confirmed is
still there after a restart or after the loss of the queue's leader.

Every wait polls for a named condition with a deadline; every process is
stopped at the end."""
import pika
import pytest

from conftest import DEADLINE, ClusterNodes, Node, wait_for

QUORUM = {"x-queue-type": "quorum"}
PERSISTENT = pika.BasicProperties(delivery_mode=2)


def _connect(port):
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port, heartbeat=0))
    return conn, conn.channel()


def _publish_confirmed(ch, queue, bodies):
    ch.confirm_delivery()
    for b in bodies:
        ch.basic_publish("", queue, b, PERSISTENT, mandatory=True)


def _drain(ch, queue, expected, requeue_first=False):
    """Consumes with manual acks until `expected` distinct bodies came;
    returns them in arrival order and the redelivered flags seen."""
    got, flags, counts = [], {}, {}
    ch.basic_qos(prefetch_count=10)
    nacked = set()
    for method, props, body in ch.consume(queue, inactivity_timeout=DEADLINE):
        assert method is not None, f"stalled after {len(got)} of {expected}"
        if requeue_first and body not in nacked:
            nacked.add(body)
            requeue_first = False
            ch.basic_nack(method.delivery_tag, requeue=True)
            continue
        if body not in flags:
            got.append(body)
        flags[body] = method.redelivered
        counts[body] = (props.headers or {}).get("x-delivery-count")
        ch.basic_ack(method.delivery_tag)
        if len(got) == expected:
            break
    ch.cancel()
    _drain.counts = counts
    return got, flags


def _ready(ch, queue):
    return ch.queue_declare(queue, durable=True, arguments=QUORUM).method.message_count


def test_a_quorum_queue_delivers_in_order_acks_and_requeues(node):
    conn, ch = _connect(node.port)
    ch.queue_declare("qq.work", durable=True, arguments=QUORUM)
    bodies = [f"m{i}".encode() for i in range(200)]
    _publish_confirmed(ch, "qq.work", bodies)
    assert _ready(ch, "qq.work") == 200
    got, flags = _drain(ch, "qq.work", 200, requeue_first=True)
    assert sorted(got) == sorted(bodies)
    # The requeued message came again, marked (back at the head, after
    # what the prefetch already held); the others came once, in order.
    assert flags[b"m0"] is True
    assert [b for b in got if b != b"m0"] == bodies[1:]
    # Returned once: RabbitMQ's header says so; a first delivery has none.
    assert _drain.counts[b"m0"] == 1
    assert _drain.counts[b"m1"] is None
    wait_for("the acks to be applied", lambda: _ready(ch, "qq.work") == 0)
    conn.close()


def test_basic_get_purge_and_delete_on_a_quorum_queue(node):
    conn, ch = _connect(node.port)
    ch.queue_declare("qq.get", durable=True, arguments=QUORUM)
    _publish_confirmed(ch, "qq.get", [b"a", b"b", b"c", b"d"])
    method, _, body = ch.basic_get("qq.get", auto_ack=True)
    assert (body, method.message_count) == (b"a", 3)
    method, _, body = ch.basic_get("qq.get", auto_ack=False)
    assert body == b"b"
    ch.basic_reject(method.delivery_tag, requeue=True)
    method, props, body = ch.basic_get("qq.get", auto_ack=False)
    assert (body, method.redelivered) == (b"b", True)
    assert props.headers == {"x-delivery-count": 1}
    ch.basic_ack(method.delivery_tag)
    assert ch.queue_purge("qq.get").method.message_count == 2
    method, _, body = ch.basic_get("qq.get", auto_ack=True)
    assert method is None
    assert ch.queue_delete("qq.get").method.message_count == 0
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare("qq.get", passive=True)
    assert e.value.reply_code == 404
    conn.close()


@pytest.mark.parametrize("how", ["sigterm", "kill9"])
def test_confirmed_messages_of_a_quorum_queue_survive_a_restart(tmp_path, how):
    node = Node(tmp_path / "data", tmp_path / "warren.log").start()
    try:
        conn, ch = _connect(node.port)
        ch.queue_declare("qq.keep", durable=True, arguments=QUORUM)
        bodies = [f"k{i}".encode() for i in range(100)]
        # Transient messages too: a quorum queue keeps every message.
        ch.confirm_delivery()
        for b in bodies:
            ch.basic_publish("", "qq.keep", b, pika.BasicProperties(delivery_mode=1))
        if how == "kill9":
            node.kill9()
        else:
            conn.close()
            node.stop()
        node.start()
        conn, ch = _connect(node.port)
        assert _ready(ch, "qq.keep") == 100
        got, _ = _drain(ch, "qq.keep", 100)
        assert got == bodies
        conn.close()
    finally:
        node.stop()


def test_a_quorum_queue_on_a_cluster_keeps_confirmed_messages_and_consumers_across_a_leader_kill(tmp_path):
    cluster = ClusterNodes(tmp_path).start()
    n1, n2, n3 = cluster.nodes
    try:
        # The first quorum queue's replica set starts at node 1, which
        # starts its first election: node 1 leads it.
        conn, ch = _connect(n1.port)
        ch.queue_declare("qq.ha", durable=True, arguments=QUORUM)
        conn.close()
        pconn, pch = _connect(n2.port)
        first = [f"a{i}".encode() for i in range(100)]
        _publish_confirmed(pch, "qq.ha", first)

        # A consumer on node 3, started before the kill.
        cconn, cch = _connect(n3.port)
        cch.basic_qos(prefetch_count=5)
        seen, cancelled = [], []
        cch.add_on_cancel_callback(lambda m: cancelled.append(m))

        def on_message(ch, method, props, body):
            seen.append(body)
            ch.basic_ack(method.delivery_tag)

        cch.basic_consume("qq.ha", on_message)
        wait_for("the first messages on node 3",
                 lambda: cconn.process_data_events(time_limit=0.05) or len(set(seen)) >= 100)

        n1.kill9()
        second = [f"b{i}".encode() for i in range(100)]
        # The publisher on node 2 goes on once a new leader is elected;
        # a publish nacked meanwhile is sent again, as client code does.
        for b in second:
            for _ in range(200):
                try:
                    pch.basic_publish("", "qq.ha", b, PERSISTENT)
                    break
                except pika.exceptions.NackError:
                    pconn.sleep(0.05)
            else:
                raise AssertionError(f"{b} was never confirmed")
        wait_for("every message on node 3",
                 lambda: cconn.process_data_events(time_limit=0.05) or set(first + second) <= set(seen))
        assert cancelled == [], "the consumer was cancelled"
        cconn.close()
        pconn.close()
    finally:
        cluster.kill9()


def test_the_default_queue_type_makes_durable_queues_quorum(tmp_path):
    node = Node(tmp_path / "data", tmp_path / "warren.log", ["--default-queue-type", "quorum"]).start()
    try:
        conn, ch = _connect(node.port)
        ch.queue_declare("task_queue", durable=True)
        # A quorum queue keeps a transient message across a restart; a
        # classic one would not.
        ch.confirm_delivery()
        ch.basic_publish("", "task_queue", b"task", pika.BasicProperties(delivery_mode=1))
        # Redeclared without arguments, as the seed's worker does.
        ch.queue_declare("task_queue", durable=True)
        # Queues that cannot be quorum stay classic.
        ch.queue_declare("transient", durable=False)
        ch.queue_declare("", exclusive=True)
        conn.close()
        node.stop()
        node.start()
        conn, ch = _connect(node.port)
        assert ch.queue_declare("task_queue", durable=True).method.message_count == 1
        conn.close()
    finally:
        node.stop()


def _hold_under_global_prefetch(consume_port, queues, limit):
    """A channel with a global prefetch of `limit` consuming `queues` (one
    consumer each, a second on the first queue): at most `limit` unacked
    at a time; a consumer cancelled while deliveries wait for the channel's
    credit leaves them to the others; acking one at a time drains all."""
    cconn, cch = _connect(consume_port)
    cch.basic_qos(prefetch_count=limit, global_qos=True)
    unacked, got = [], []

    def on_message(ch, method, props, body):
        unacked.append(method.delivery_tag)
        got.append(body)

    tags = [cch.basic_consume(q, on_message) for q in queues]
    tags.append(cch.basic_consume(queues[0], on_message))

    def pump():
        cconn.process_data_events(time_limit=0.05)
        return len(unacked)

    wait_for(f"{limit} deliveries", lambda: pump() >= limit)
    # Nothing more arrives while the channel is at its limit (bounded
    # quiet period: a delivery past the limit would come within it).
    for _ in range(10):
        assert pump() == limit, f"{len(unacked)} unacked past a global prefetch of {limit}"
    # The extra consumer goes while its deliveries may be held back.
    cch.basic_cancel(tags.pop())
    total = 0
    while True:
        cch.basic_ack(unacked.pop(0))
        total += 1
        try:
            wait_for("the next delivery", lambda: pump() >= limit, timeout=3)
        except AssertionError:
            break
        assert len(unacked) <= limit
    for t in unacked:
        cch.basic_ack(t)
    cconn.process_data_events(time_limit=0.1)
    cconn.close()
    return got


def test_a_global_prefetch_holds_across_the_consumers_and_quorum_queues_of_a_channel(node):
    conn, ch = _connect(node.port)
    sent = []
    for q in ("qq.g1", "qq.g2"):
        ch.queue_declare(q, durable=True, arguments=QUORUM)
        bodies = [f"{q}-{i}".encode() for i in range(6)]
        _publish_confirmed(ch, q, bodies)
        sent += bodies
    got = _hold_under_global_prefetch(node.port, ["qq.g1", "qq.g2"], 2)
    assert set(got) == set(sent), "every message came, none stuck with the cancelled consumer"
    wait_for("both queues empty", lambda: _ready(ch, "qq.g1") + _ready(ch, "qq.g2") == 0)
    conn.close()


def test_a_global_prefetch_holds_for_a_consumer_on_another_node_than_the_leader(tmp_path):
    cluster = ClusterNodes(tmp_path).start()
    n1, _, n3 = cluster.nodes
    try:
        # Node 1 leads the first quorum queue; the channel is on node 3.
        conn, ch = _connect(n1.port)
        ch.queue_declare("qq.gr", durable=True, arguments=QUORUM)
        sent = [f"r{i}".encode() for i in range(8)]
        _publish_confirmed(ch, "qq.gr", sent)
        got = _hold_under_global_prefetch(n3.port, ["qq.gr"], 2)
        assert set(got) == set(sent)
        wait_for("the queue empty", lambda: _ready(ch, "qq.gr") == 0)
        conn.close()
    finally:
        cluster.kill9()
