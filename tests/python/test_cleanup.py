"""Clean-up code that tears a topology down in any order, as aio-pika's own
fixtures do: unbinding from a queue or an exchange that is already gone is
unbind-ok in RabbitMQ 3.x, not a 404 that closes the channel."""
import pika


def _channel(node):
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", node.port))
    return conn, conn.channel()


def test_unbind_after_the_queue_or_the_exchange_is_deleted(node):
    conn, ch = _channel(node)
    ch.exchange_declare("cleanup.x", "direct")
    for q in ("cleanup.q1", "cleanup.q2"):
        ch.queue_declare(q)
        ch.queue_bind(q, "cleanup.x", routing_key="k")
    ch.exchange_declare("cleanup.x2", "fanout")
    ch.exchange_bind("cleanup.x2", "cleanup.x", routing_key="k")

    # Queue first, then its binding.
    ch.queue_delete("cleanup.q1")
    ch.queue_unbind("cleanup.q1", "cleanup.x", routing_key="k")
    # Exchange first, then the bindings that named it.
    ch.exchange_delete("cleanup.x")
    ch.queue_unbind("cleanup.q2", "cleanup.x", routing_key="k")
    ch.exchange_unbind("cleanup.x2", "cleanup.x", routing_key="k")
    # And a binding that never existed.
    ch.queue_unbind("cleanup.q2", "amq.direct", routing_key="never")

    assert ch.is_open, "every unbind was answered with unbind-ok"
    ch.queue_delete("cleanup.q2")
    ch.exchange_delete("cleanup.x2")
    conn.close()
