"""RabbitMQ's everyday queue features as Python client code uses them: a
Celery-style delayed retry (message TTL and a dead-letter exchange) with pika
and with kombu, the x-death record such code reads, and a per-message
expiration."""
import time

import kombu
import pika

from conftest import wait_for


def _channel(node):
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", node.port))
    return conn, conn.channel()


def _retry_topology(ch, work, retry, delay_ms):
    """`work` dead-letters rejected messages to `retry`, where they wait
    `delay_ms` and go back to `work`: the delayed retry of Celery and Spring."""
    ch.queue_declare(work, durable=True, arguments={
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": retry,
    })
    ch.queue_declare(retry, durable=True, arguments={
        "x-message-ttl": delay_ms,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": work,
    })


def test_a_delayed_retry_with_pika_counts_each_round_in_x_death(node):
    conn, ch = _channel(node)
    _retry_topology(ch, "tasks", "tasks.retry", 50)
    ch.confirm_delivery()
    ch.basic_publish("", "tasks", b"job", pika.BasicProperties(delivery_mode=2, message_id="m-1"))
    deliveries = []
    for _ in range(3):
        method, props, body = wait_for(
            "a delivery from tasks", lambda: _get(ch, "tasks"))
        deliveries.append((method, props, body))
        if len(deliveries) < 3:
            ch.basic_reject(method.delivery_tag, requeue=False)
        else:
            ch.basic_ack(method.delivery_tag)
    _, props, body = deliveries[-1]
    assert body == b"job"
    assert props.message_id == "m-1"
    assert props.delivery_mode == 2
    h = props.headers
    assert [(d["queue"], d["reason"], d["count"]) for d in h["x-death"]] == [
        ("tasks.retry", "expired", 2),
        ("tasks", "rejected", 2),
    ]
    assert h["x-death"][1]["routing-keys"] == ["tasks"]
    assert h["x-death"][1]["exchange"] == ""
    assert h["x-first-death-reason"] == "rejected"
    assert h["x-first-death-queue"] == "tasks"
    assert h["x-last-death-reason"] == "expired"
    assert h["x-last-death-queue"] == "tasks.retry"
    conn.close()


def _get(ch, queue):
    method, props, body = ch.basic_get(queue, auto_ack=False)
    return (method, props, body) if method else None


def test_a_delayed_retry_with_kombu(node):
    with kombu.Connection(f"amqp://guest:guest@127.0.0.1:{node.port}//") as conn:
        ch = conn.channel()
        work = kombu.Queue("k.tasks", exchange=kombu.Exchange("", type="direct"), routing_key="k.tasks",
                           durable=True, queue_arguments={
                               "x-dead-letter-exchange": "",
                               "x-dead-letter-routing-key": "k.retry"})
        retry = kombu.Queue("k.retry", exchange=kombu.Exchange("", type="direct"), routing_key="k.retry",
                            durable=True, queue_arguments={
                                "x-message-ttl": 50,
                                "x-dead-letter-exchange": "",
                                "x-dead-letter-routing-key": "k.tasks"})
        work(ch).declare()
        retry(ch).declare()
        producer = kombu.Producer(ch)
        producer.publish({"task": "add", "args": [2, 2]}, exchange="", routing_key="k.tasks",
                         serializer="json", delivery_mode=2)
        seen = []

        def on_message(body, message):
            seen.append((body, message.headers))
            if len(seen) == 1:
                message.reject()
            else:
                message.ack()

        with kombu.Consumer(ch, queues=[work], callbacks=[on_message], accept=["json"]):
            end = time.monotonic() + 30
            while len(seen) < 2:
                assert time.monotonic() < end, f"timed out with {seen}"
                try:
                    conn.drain_events(timeout=1)
                except TimeoutError:
                    pass
        body, headers = seen[1]
        assert body == {"task": "add", "args": [2, 2]}
        assert [(d["queue"], d["reason"], d["count"]) for d in headers["x-death"]] == [
            ("k.retry", "expired", 1),
            ("k.tasks", "rejected", 1),
        ]


def test_an_expired_message_is_never_fetched(node):
    conn, ch = _channel(node)
    ch.queue_declare("exp", durable=True)
    ch.confirm_delivery()
    ch.basic_publish("", "exp", b"old", pika.BasicProperties(expiration="30"))
    ch.basic_publish("", "exp", b"new", pika.BasicProperties(expiration="600000"))
    wait_for("the first message to expire",
             lambda: ch.queue_declare("exp", passive=True).method.message_count == 1)
    _, _, body = ch.basic_get("exp", auto_ack=True)
    assert body == b"new"
    conn.close()


def test_a_kombu_priority_queue_serves_the_highest_priority_first(node):
    with kombu.Connection(f"amqp://guest:guest@127.0.0.1:{node.port}//") as conn:
        ch = conn.channel()
        q = kombu.Queue("k.prio", exchange=kombu.Exchange("", type="direct"), routing_key="k.prio",
                        durable=True, queue_arguments={"x-max-priority": 10})
        q(ch).declare()
        producer = kombu.Producer(ch)
        for i, p in enumerate([1, 9, 5, 9, 0]):
            producer.publish({"n": i}, exchange="", routing_key="k.prio", serializer="json", priority=p)
        wait_for("five ready", lambda: q(ch).queue_declare(passive=True).message_count == 5)
        got = []
        for _ in range(5):
            msg = q(ch).get(no_ack=True, accept=["json"])
            got.append(msg.payload["n"])
        assert got == [1, 3, 2, 0, 4]


def test_direct_reply_to_rpc_with_the_tutorial_programs(node, run):
    """The seed's RPC programs, the client changed only to consume its
    replies from `amq.rabbitmq.reply-to` instead of a callback queue."""
    servers = [run("rpc_server.py") for _ in range(2)]
    for s in servers:
        s.wait_line("Awaiting RPC requests")
    fib = {20: 6765, 25: 75025, 10: 55, 15: 610, 22: 17711, 12: 144}
    args = [(25, 10), (20, 15), (22, 12)]
    clients = [run("rpc_client_direct.py", *map(str, ns)) for ns in args]
    for c, ns in zip(clients, args):
        lines = c.finish(timeout=60)
        got = [int(l.split()[-1]) for l in lines if "Got" in l]
        assert got == [fib[n] for n in ns], lines
    served = sum(1 for s in servers for l in s.output() if "fib(" in l)
    assert served == 6
    # The pseudo-queue answers a passive declare, as RabbitMQ's does.
    conn, ch = _channel(node)
    try:
        ok = ch.queue_declare("amq.rabbitmq.reply-to", passive=True)
        assert (ok.method.message_count, ok.method.consumer_count) == (0, 1)
    finally:
        conn.close()
