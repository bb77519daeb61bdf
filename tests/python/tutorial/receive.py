import pika
from _conn import parameters

connection = pika.BlockingConnection(parameters())
channel = connection.channel()
channel.queue_declare(queue='hello1')


def callback(ch, method, properties, body):
    print(" [x] Received %r" % body, flush=True)


channel.basic_consume(queue='hello1', on_message_callback=callback, auto_ack=True)
print(' [*] Waiting for messages. To exit press CTRL+C', flush=True)
channel.start_consuming()
