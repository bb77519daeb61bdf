"""The eight scenarios of shared/seed/SCENARIOS.md, each as separate producer and
consumer processes (the tutorial's own programs), against a fresh single node,
against a fresh three-node cluster with the programs spread over its nodes, and
against such a cluster whose default queue type is quorum (the durable
`task_queue` of the work-queue scenario is then a quorum queue), and against
the docker compose cluster of deploy/compose (three containers from the
image, quorum by default, clients through the published ports)."""
import pika
import pytest

from compose import ComposeCluster
from conftest import DEADLINE, ClusterNodes, Node, wait_for


@pytest.fixture(params=["single", "cluster", "quorum-cluster", "compose"])
def node(request, tmp_path):
    if request.param == "compose":
        # deploy/compose's three containers (quorum by default), built once.
        request.getfixturevalue("compose_image")
        n = ComposeCluster()
        try:
            n.start()
        except BaseException:
            n.stop()
            raise
        yield n
        n.stop()
        return
    if request.param == "single":
        n = Node(tmp_path / "data", tmp_path / "warren.log").start()
    elif request.param == "cluster":
        n = ClusterNodes(tmp_path).start()
    else:
        n = ClusterNodes(tmp_path, extra=["--default-queue-type", "quorum"]).start()
    yield n
    n.stop()


def received(lines):
    return [line for line in lines if "Received" in line]


def test_1_hello_world_delivers_backlog_then_round_robin(node, run):
    run("send.py").finish()
    first = run("receive.py")
    first.wait_line("Received b'HelloWorld!!'")

    second = run("receive.py")
    second.wait_line("Waiting for messages")
    # Both are consumers now; wait until the broker has both before publishing.
    conn = pika.BlockingConnection(node.params())
    wait_for("two consumers on hello1",
             lambda: conn.channel().queue_declare("hello1", passive=True).method.consumer_count == 2)
    conn.close()
    for i in range(4):
        run("send.py", f"m{i}").finish()
    first.wait_line("Received b'm", count=2)
    second.wait_line("Received b'm", count=2)
    a = {l.split()[-1] for l in received(first.output()) if "'m" in l}
    b = {l.split()[-1] for l in received(second.output()) if "'m" in l}
    assert a | b == {"b'm0'", "b'm1'", "b'm2'", "b'm3'"} and not (a & b)


def test_2_unacked_message_of_a_dead_worker_goes_to_another(node, run):
    w1 = run("worker.py")
    w1.wait_line("Waiting for messages")
    run("new_task.py", "slow.........................").finish()
    w1.wait_line("Received b'slow")
    w1.kill()  # dies before basic_ack (TCP dropped by the kernel)
    w2 = run("worker.py")
    w2.wait_line("Received b'slow")


def test_3_durable_queue_and_persistent_messages_survive_kill9(node, run):
    for i in range(3):
        run("new_task.py", f"task{i}").finish()
    # A durable exchange and binding declared just before the crash survive too.
    conn = pika.BlockingConnection(node.params())
    ch = conn.channel()
    ch.exchange_declare("durable_x", "direct", durable=True)
    ch.queue_bind("task_queue", "durable_x", routing_key="k")
    node.kill9()
    node.start()
    conn = pika.BlockingConnection(node.params())
    ch = conn.channel()
    ch.exchange_declare("durable_x", "direct", passive=True)
    conn.close()
    w = run("worker.py")
    lines = w.wait_line(" [x] Done", count=3)
    assert [l for l in received(lines)] == [
        " [x] Received b'task0'", " [x] Received b'task1'", " [x] Received b'task2'"]
    conn = pika.BlockingConnection(node.params())
    conn.channel().basic_publish("durable_x", "k", b"via-binding")
    conn.close()
    w.wait_line("Received b'via-binding'")


def test_3_redeclare_with_other_parameters_is_406(node, run):
    run("new_task.py", "x").finish()
    conn = pika.BlockingConnection(node.params())
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare("task_queue", durable=False)
    assert e.value.reply_code == 406
    assert "inequivalent arg 'durable'" in e.value.reply_text
    conn.close()


def test_4_fair_dispatch_with_prefetch_1(node, run):
    busy, free = run("worker.py"), run("worker.py")
    busy.wait_line("Waiting"), free.wait_line("Waiting")
    run("new_task.py", "long.....").finish()
    wait_for("the long task to be taken",
             lambda: any("long" in l for l in busy.output() + free.output()))
    if any("long" in l for l in free.output()):
        busy, free = free, busy
    for i in range(4):
        run("new_task.py", f"short{i}").finish()
    free.wait_line("Received b'short", count=4)
    # The busy worker got nothing new while its message was unacked.
    assert not any("short" in l for l in busy.output())


def test_5_fanout_reaches_every_subscriber_and_queues_go_with_connections(node, run):
    subs = [run("receive_logs.py") for _ in range(2)]
    names = []
    for s in subs:
        line = s.wait_line("Waiting for logs")[0]
        names.append(line.split(" on ")[1].split(".")[0] + "." + line.split(" on ")[1].split(".")[1])
    run("emit_log.py", "info: hi all").finish()
    for s in subs:
        s.wait_line("[x] b'info: hi all'")
    assert all(n.startswith("amq.gen-") for n in names)
    subs[0].kill()
    conn = pika.BlockingConnection(node.params())

    def gone():
        ch = conn.channel()
        try:
            ch.queue_declare(names[0], passive=True)
            return False
        except pika.exceptions.ChannelClosedByBroker as e:
            return e.reply_code == 404
    wait_for("exclusive queue deleted with its connection", gone)
    conn.close()


def test_6_direct_routing_by_severity(node, run):
    iw = run("receive_logs_direct.py", "info", "warning")
    err = run("receive_logs_direct.py", "error")
    iw.wait_line("Waiting"), err.wait_line("Waiting")
    for sev in ("info", "warning", "error", "debug"):
        run("emit_log_direct.py", sev, f"{sev} msg").finish()
    err.wait_line("'error':b'error msg'")
    iw.wait_line("'warning':b'warning msg'")
    got_iw = [l for l in iw.output() if "[x]" in l]
    got_err = [l for l in err.output() if "[x]" in l]
    assert got_iw == [" [x] 'info':b'info msg'", " [x] 'warning':b'warning msg'"]
    assert got_err == [" [x] 'error':b'error msg'"]


def test_7_topic_wildcards(node, run):
    crit = run("receive_logs_topic.py", "*.critical")
    kern = run("receive_logs_topic.py", "kern.*")
    every = run("receive_logs_topic.py", "#")
    for p in (crit, kern, every):
        p.wait_line("Waiting")
    keys = ["kern.critical", "app.critical", "kern.info", "critical", "kern.info.x", "a.b.critical"]
    for k in keys:
        run("emit_log_topic.py", k, f"m-{k}").finish()
    every.wait_line("[x]", count=len(keys))
    kern.wait_line("'kern.info'")
    crit.wait_line("'app.critical'")

    def keys_of(p):
        return [l.split("'")[1] for l in p.output() if "[x]" in l]
    assert keys_of(every) == keys
    assert keys_of(crit) == ["kern.critical", "app.critical"]
    assert keys_of(kern) == ["kern.critical", "kern.info"]


def test_8_rpc_with_several_clients_and_servers(node, run):
    servers = [run("rpc_server.py") for _ in range(2)]
    for s in servers:
        s.wait_line("Awaiting RPC requests")
    fib = {20: 6765, 25: 75025, 30: 832040, 10: 55, 15: 610, 22: 17711}
    clients = [run("rpc_client.py", "30", "10"), run("rpc_client.py", "25", "15"), run("rpc_client.py", "20", "22")]
    for c, ns in zip(clients, [(30, 10), (25, 15), (20, 22)]):
        lines = c.finish(timeout=DEADLINE * 2)
        got = [int(l.split()[-1]) for l in lines if "Got" in l]
        assert got == [fib[n] for n in ns], lines
    served = sum(1 for s in servers for l in s.output() if "fib(" in l)
    assert served == 6
