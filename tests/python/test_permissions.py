"""Users and permissions as a pika application meets them: a user added with
`warren users add` cannot open `/` until `warren permissions add` gives it
something there, and each refused operation closes the channel with
RabbitMQ's 403 and text, leaving the connection usable."""
import os
import subprocess

import pika
import pytest

from conftest import CLUSTER_SECRET, WARREN, Node, free_port


@pytest.fixture
def managed(tmp_path):
    """A node with a cluster port, so that `warren users ...` can reach it."""
    addr = f"127.0.0.1:{free_port()}"
    n = Node(tmp_path / "data", tmp_path / "warren.log",
             extra=["--cluster-listen", addr]).start()
    n.cluster_addr = addr
    yield n
    n.stop()


def warren(node, *args):
    env = dict(os.environ, WARREN_CLUSTER_SECRET=CLUSTER_SECRET)
    out = subprocess.run([WARREN, *args, "--server", node.cluster_addr], env=env,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out
    return out.stdout


def connect(node, user, password):
    creds = pika.PlainCredentials(user, password)
    return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", node.port, credentials=creds))


def refused(conn, text, op):
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        op(ch)
    assert e.value.reply_code == 403, e.value
    assert text in e.value.reply_text, e.value


def test_a_pika_application_gets_rabbitmqs_refusals(managed):
    admin = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", managed.port))
    ach = admin.channel()
    ach.queue_declare("orders", durable=True)
    ach.exchange_declare("events", exchange_type="topic")
    ach.basic_publish("", "orders", b"order-1")

    warren(managed, "users", "add", "app", "app-pw")
    # pika reads a close during the handshake as it does RabbitMQ's.
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as e:
        connect(managed, "app", "app-pw")
    assert "(530) \"NOT_ALLOWED - access to vhost '/' refused for user 'app'\"" in str(e.value), e.value

    warren(managed, "permissions", "add", "app", "^app\\.", "^app\\.", "^(app\\.|orders$)")
    conn = connect(managed, "app", "app-pw")
    ch = conn.channel()
    ch.queue_declare("app.inbox")
    ch.exchange_declare("app.out", exchange_type="fanout")
    ch.queue_bind("app.inbox", "app.out")
    # Reading `orders` is granted: the message is there for it.
    method, _, body = ch.basic_get("orders", auto_ack=True)
    assert body == b"order-1", method

    refused(conn, "configure access to queue 'orders' in vhost '/' refused for user 'app'",
            lambda c: c.queue_declare("orders", durable=True))
    refused(conn, "read access to exchange 'events' in vhost '/' refused for user 'app'",
            lambda c: c.queue_bind("app.inbox", "events", routing_key="#"))
    refused(conn, "read access to queue 'audit' in vhost '/' refused for user 'app'",
            lambda c: c.basic_consume("audit", lambda *a: None))

    def publish_default(c):
        c.confirm_delivery()
        c.basic_publish("", "app.inbox", b"x")

    refused(conn, "write access to exchange 'amq.default' in vhost '/' refused for user 'app'",
            publish_default)
    # The connection outlives its refused channels.
    assert conn.is_open
    conn.channel().basic_publish("app.out", "", b"fan")
    listed = warren(managed, "permissions", "list")
    assert "/\tapp\t^app\\.\t^app\\.\t^(app\\.|orders$)" in listed, listed
    conn.close()
    admin.close()


def closed_by_broker(conn):
    """Waits (bounded) for the broker to close `conn`; returns pika's error."""
    for _ in range(100):
        try:
            conn.process_data_events(time_limit=0.1)
        except pika.exceptions.ConnectionClosedByBroker as e:
            return e
    raise AssertionError("the broker did not close the connection within 10 s")


def test_deleting_a_vhost_or_a_user_closes_their_connections(managed):
    warren(managed, "vhosts", "add", "shop")
    warren(managed, "users", "add", "clerk", "clerk-pw")
    warren(managed, "permissions", "add", "clerk", ".*", ".*", ".*", "--vhost", "shop")
    warren(managed, "permissions", "add", "clerk", ".*", ".*", ".*")
    creds = pika.PlainCredentials("clerk", "clerk-pw")

    def open_in(vhost):
        return pika.BlockingConnection(pika.ConnectionParameters(
            "127.0.0.1", managed.port, virtual_host=vhost, credentials=creds))

    in_shop, in_root = open_in("shop"), open_in("/")
    in_shop.channel().queue_declare("carts")
    # RabbitMQ closes every connection of a deleted vhost at once, with 320.
    warren(managed, "vhosts", "delete", "shop")
    e = closed_by_broker(in_shop)
    assert (e.reply_code, e.reply_text) == (320, "CONNECTION_FORCED - vhost 'shop' is deleted"), e
    # The user's connection to another vhost is untouched...
    in_root.channel().queue_declare("still-here")
    # ...until the user is deleted.
    warren(managed, "users", "delete", "clerk")
    e = closed_by_broker(in_root)
    assert (e.reply_code, e.reply_text) == (320, "CONNECTION_FORCED - user 'clerk' is deleted"), e
