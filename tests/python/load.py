"""A publisher and a consumer that keep going through node failures, as an
application would: each runs in its own thread on its own connection, and
when the connection fails it reconnects to the next node of its list.

The publisher sends numbered persistent messages with publisher confirms and
counts a number as confirmed only once its `basic.ack` arrived (a nack or a
lost connection sends the same number again, so duplicates are possible and
counted, losses are not). The consumer acks each message after recording it."""
import threading
import time

import pika

# Pause before a reconnect: back-off, not synchronisation.
RETRY_PAUSE = 0.2


class _Client(threading.Thread):
    def __init__(self, params_of, nodes, queue):
        super().__init__(daemon=True)
        self.params_of = params_of
        self.nodes = list(nodes)
        self.queue = queue
        self.stopping = threading.Event()
        self.reconnects = 0
        self.last_error = None
        self.turn = 0

    def params(self):
        return self.params_of(self.nodes[self.turn % len(self.nodes)])

    def failed(self, e):
        self.reconnects += 1
        self.last_error = repr(e)
        self.turn += 1
        time.sleep(RETRY_PAUSE)

    def stop(self, timeout=30):
        self.stopping.set()
        self.join(timeout)
        assert not self.is_alive(), f"{type(self).__name__} did not stop"


class Publisher(_Client):
    def __init__(self, params_of, nodes, queue):
        super().__init__(params_of, nodes, queue)
        self.confirmed = []
        self.next = 0

    def run(self):
        while not self.stopping.is_set():
            conn = None
            try:
                conn = pika.BlockingConnection(self.params())
                ch = conn.channel()
                ch.confirm_delivery()
                while not self.stopping.is_set():
                    ch.basic_publish("", self.queue, str(self.next).encode(),
                                     pika.BasicProperties(delivery_mode=2))
                    self.confirmed.append(self.next)
                    self.next += 1
            except (pika.exceptions.AMQPError, OSError) as e:
                self.failed(e)
            finally:
                _close(conn)


class Consumer(_Client):
    def __init__(self, params_of, nodes, queue):
        super().__init__(params_of, nodes, queue)
        self.received = []

    def run(self):
        while not self.stopping.is_set():
            conn = None
            try:
                conn = pika.BlockingConnection(self.params())
                ch = conn.channel()
                ch.basic_qos(prefetch_count=50)
                for method, _, body in ch.consume(self.queue, inactivity_timeout=0.2):
                    if self.stopping.is_set():
                        break
                    if method is None:
                        continue
                    self.received.append(int(body))
                    ch.basic_ack(method.delivery_tag)
            except (pika.exceptions.AMQPError, OSError) as e:
                self.failed(e)
            finally:
                _close(conn)


def _close(conn):
    """Closes `conn` if it is open; a connection that already failed is left."""
    try:
        if conn is not None and conn.is_open:
            conn.close()
    except (pika.exceptions.AMQPError, OSError):
        pass


def drain(params, queue):
    """Every message left in `queue`, taken with basic.get through `params`."""
    conn = pika.BlockingConnection(params)
    try:
        ch = conn.channel()
        got = []
        while True:
            method, _, body = ch.basic_get(queue, auto_ack=True)
            if method is None:
                return got
            got.append(int(body))
    finally:
        conn.close()
