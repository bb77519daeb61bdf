"""Process lifecycle of a real node: graceful SIGTERM, restart on the same data."""
import signal

import pika
import pytest

from conftest import DEADLINE


def test_sigterm_closes_clients_with_320_and_keeps_confirmed_messages(node):
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", node.port))
    ch = conn.channel()
    ch.queue_declare("kept", durable=True)
    ch.confirm_delivery()
    for i in range(100):
        ch.basic_publish("", "kept", f"m{i}".encode(), pika.BasicProperties(delivery_mode=2))
    node.proc.send_signal(signal.SIGTERM)
    assert node.proc.wait(timeout=DEADLINE) == 0, "clean exit"
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        conn.process_data_events(time_limit=1)
        ch.queue_declare("kept", passive=True)
    assert e.value.reply_code == 320
    node.start()
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", node.port))
    ch = conn.channel()
    assert ch.queue_declare("kept", passive=True).method.message_count == 100
    bodies = [ch.basic_get("kept", auto_ack=True)[2] for _ in range(100)]
    assert bodies == [f"m{i}".encode() for i in range(100)]
    conn.close()
