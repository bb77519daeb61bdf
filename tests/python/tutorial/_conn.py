"""Where the tutorial programs connect: localhost:5672 unless AMQP_PORT says otherwise.

This is the only change made to the tutorial's programs, so that tests can run
a broker on a free port."""
import os

import pika


def parameters():
    return pika.ConnectionParameters(
        host=os.environ.get("AMQP_HOST", "localhost"),
        port=int(os.environ.get("AMQP_PORT", "5672")),
    )
