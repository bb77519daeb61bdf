"""Declaring quorum queues as client code does, answered as RabbitMQ 3.10
answers: what a quorum queue cannot be is refused with 406 and its text, and
a durable quorum queue is declared, used and redeclared."""
import pika
import pytest

QUORUM = {"x-queue-type": "quorum"}


def _channel(node):
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", node.port))
    return conn, conn.channel()


@pytest.mark.parametrize(
    "flags, arguments, text",
    [
        (dict(durable=True, exclusive=True), {}, "invalid property 'exclusive-owner' for queue 'qq.refused' in vhost '/'"),
        (dict(durable=True, auto_delete=True), {}, "invalid property 'auto-delete' for queue 'qq.refused' in vhost '/'"),
        (dict(durable=False), {}, "invalid property 'non-durable' for queue 'qq.refused' in vhost '/'"),
        (dict(durable=True), {"x-max-priority": 5}, "invalid arg 'x-max-priority' for queue 'qq.refused' in vhost '/'"),
    ],
)
def test_what_a_quorum_queue_cannot_be_is_refused(node, flags, arguments, text):
    conn, ch = _channel(node)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare("qq.refused", arguments={**QUORUM, **arguments}, **flags)
    assert e.value.reply_code == 406
    assert e.value.reply_text == f"PRECONDITION_FAILED - {text}"
    # Nothing was declared; the connection goes on.
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare("qq.refused", passive=True)
    assert e.value.reply_code == 404
    conn.close()


def test_a_durable_quorum_queue_is_declared_used_and_redeclared(node):
    conn, ch = _channel(node)
    ch.queue_declare("qq.tasks", durable=True, arguments={**QUORUM, "x-delivery-limit": 5})
    ch.confirm_delivery()
    ch.basic_publish("", "qq.tasks", b"work", pika.BasicProperties(delivery_mode=2))
    method, _, body = ch.basic_get("qq.tasks", auto_ack=True)
    assert body == b"work"
    ch.queue_declare("qq.tasks", durable=True, arguments={**QUORUM, "x-delivery-limit": 5})
    # A different delivery limit is a different queue.
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare("qq.tasks", durable=True, arguments={**QUORUM, "x-delivery-limit": 6})
    assert e.value.reply_code == 406
    conn.close()
