"""Where the tutorial programs connect: localhost:5672 as guest unless AMQP_PORT
(AMQP_HOST, AMQP_USER, AMQP_PASSWORD) say otherwise.

This is the only change made to the tutorial's programs, so that tests can run
a broker on a free port, or a container cluster whose user is not guest."""
import os

import pika


def parameters():
    return pika.ConnectionParameters(
        host=os.environ.get("AMQP_HOST", "localhost"),
        port=int(os.environ.get("AMQP_PORT", "5672")),
        credentials=pika.PlainCredentials(
            os.environ.get("AMQP_USER", "guest"), os.environ.get("AMQP_PASSWORD", "guest")),
    )
