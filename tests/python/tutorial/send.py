import sys

import pika
from _conn import parameters

connection = pika.BlockingConnection(parameters())
channel = connection.channel()
channel.queue_declare(queue='hello1')
body = sys.argv[1] if len(sys.argv) > 1 else 'HelloWorld!!'
channel.basic_publish(exchange='', routing_key='hello1', body=body)
print(" [x] Sent %r" % body)
connection.close()
