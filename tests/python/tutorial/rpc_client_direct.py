import sys
import uuid

import pika
from _conn import parameters


class FibonacciRpcClient(object):

    def __init__(self):
        self.connection = pika.BlockingConnection(parameters())
        self.channel = self.connection.channel()
        # Direct reply-to: replies come to this channel, no callback queue.
        self.callback_queue = 'amq.rabbitmq.reply-to'
        self.channel.basic_consume(queue=self.callback_queue,
                                   on_message_callback=self.on_response,
                                   auto_ack=True)
        self.response = None
        self.corr_id = None

    def on_response(self, ch, method, props, body):
        if self.corr_id == props.correlation_id:
            self.response = body

    def call(self, n):
        self.response = None
        self.corr_id = str(uuid.uuid4())
        self.channel.basic_publish(exchange='',
                                   routing_key='rpc_queue',
                                   properties=pika.BasicProperties(reply_to=self.callback_queue,
                                                                   correlation_id=self.corr_id),
                                   body=str(n))
        while self.response is None:
            self.connection.process_data_events(time_limit=None)
        return int(self.response)


fibonacci_rpc = FibonacciRpcClient()
for n in (sys.argv[1:] or ["30"]):
    print(" [x] Requesting fib(%s)" % n, flush=True)
    response = fibonacci_rpc.call(int(n))
    print(" [.] Got %r" % response, flush=True)
