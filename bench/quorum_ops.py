"""Quorum queues under faults and at size, on three Warren nodes on loopback
(default settings), with pika as the client:

    .venv/bin/python bench/quorum_ops.py failover --kills 10
        kill -9 of a quorum queue's leader, then the time until a publish
        through a survivor is confirmed; the node is restarted and has caught
        up before the next kill (whichever node leads then).
    .venv/bin/python bench/quorum_ops.py many --queues 1000
        1,000 quorum queues, kill -9 of one node (it leads a third of them),
        then the time until every queue has confirmed a publish again.
    .venv/bin/python bench/quorum_ops.py backlog --messages 1000000
        a follower is killed, the backlog (1 KiB persistent, confirms) is
        published through the leader's node, the follower restarted: RSS per
        node, the time it takes to catch up, and a drain that counts every
        message.

Every process is stopped at the end, whatever happens. Prints one JSON
object per measurement and a summary."""
import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pika
import pika.exceptions

from nodes import Sampler, WarrenNodes, rss_of  # this folder is on the path

ROOT = Path(__file__).resolve().parents[1]
SECRET = "warren-quorum-ops-secret"
# Bound on any one wait for a named condition.
WAIT = 120.0


def until(what, check, timeout=WAIT, every=0.05):
    """Polls `check` until it returns something truthy; fails after `timeout`."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = check()
        if got:
            return got
        time.sleep(every)
    raise RuntimeError(f"timed out waiting for {what}")


def replicas(nodes, alive):
    """Every replica the live nodes report, by queue."""
    server = min(alive)
    by_queue = {}
    try:
        rows = nodes.cli("queues", "status", server=server)
    except (subprocess.SubprocessError, json.JSONDecodeError):
        return {}
    for r in rows:
        by_queue.setdefault(r["queue"], []).append(r)
    return by_queue


def settled_leader(nodes, alive, queue):
    """The queue's leader once every live replica knows it and its log is
    level with the leader's; None until then."""
    rs = [r for r in replicas(nodes, alive).get(queue, []) if r["node"] in alive]
    if len(rs) != len(alive):
        return None
    leaders = {r["leader"] for r in rs}
    if len(leaders) != 1 or None in leaders or leaders.pop() not in alive:
        return None
    last = {r["last_applied"] for r in rs}
    return rs[0]["leader"] if len(last) == 1 else None


def channel(url):
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.confirm_delivery()
    return conn, ch


def publish_confirmed(url, conn_ch, queue, deadline):
    """Publishes until one publish to `queue` is confirmed; reconnects on a
    closed connection, re-sends on a nack. Returns the open (conn, ch)."""
    conn, ch = conn_ch
    while time.monotonic() < deadline:
        try:
            ch.basic_publish("", queue, b"x", pika.BasicProperties(delivery_mode=2), mandatory=True)
            return conn, ch
        except (pika.exceptions.NackError, pika.exceptions.UnroutableError):
            time.sleep(0.01)
        except pika.exceptions.AMQPError:
            try:
                conn, ch = channel(url)
            except pika.exceptions.AMQPError:
                time.sleep(0.05)
    raise RuntimeError(f"no confirm from {queue} in time")


def failover(nodes, opts):
    alive = set(range(1, nodes.n + 1))
    conn, ch = channel(nodes.url(1))
    ch.queue_declare("fo", durable=True, arguments={"x-queue-type": "quorum"})
    conn.close()
    times = []
    for k in range(opts.kills):
        leader = until("a settled leader", lambda: settled_leader(nodes, alive, "fo"))
        survivor = min(alive - {leader})
        url = nodes.url(survivor)
        c = publish_confirmed(url, channel(url), "fo", time.monotonic() + WAIT)
        t0 = time.monotonic()
        nodes.kill(leader)
        alive.discard(leader)
        c = publish_confirmed(url, c, "fo", t0 + WAIT)
        took = time.monotonic() - t0
        times.append(took)
        print(f"kill {k + 1}: node {leader} led; publish through node {survivor} confirmed after "
              f"{took * 1000:.0f} ms", flush=True)
        c[0].close()
        nodes.start_node(leader)
        alive.add(leader)
    ms = [round(t * 1000) for t in times]
    return {"measure": "failover", "kills": len(ms), "ms": ms, "median_ms": statistics.median(ms),
            "max_ms": max(ms)}


def many(nodes, opts):
    names = [f"m.{q}" for q in range(opts.queues)]
    conn, ch = channel(nodes.url(1))
    t0 = time.monotonic()
    for q in names:
        ch.queue_declare(q, durable=True, arguments={"x-queue-type": "quorum"})
    conn.close()
    declared = time.monotonic() - t0
    alive = set(range(1, nodes.n + 1))

    def leaders():
        by = replicas(nodes, alive)
        led = {q: {r["leader"] for r in by.get(q, [])} for q in names}
        return led if all(len(ls) == 1 and None not in ls for ls in led.values()) else None

    led = until("every queue led", leaders)
    victim = 1
    on_victim = sum(1 for ls in led.values() if victim in ls)
    survivors = sorted(alive - {victim})
    workers = opts.workers
    chans = [channel(nodes.url(survivors[w % len(survivors)])) for w in range(workers)]
    confirmed = [0.0] * len(names)
    errors = []

    def work(w):
        url = nodes.url(survivors[w % len(survivors)])
        try:
            for i in range(w, len(names), workers):
                # Kept in `chans`: a reconnected channel is the one closed.
                chans[w] = publish_confirmed(url, chans[w], names[i], t0 + WAIT)
                confirmed[i] = time.monotonic() - t0
        except Exception as e:  # reported below, the run fails
            errors.append(repr(e))

    t0 = time.monotonic()
    nodes.kill(victim)
    threads = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"publishes failed: {errors[:3]}")
    for c in chans:
        try:
            c[0].close()
        except pika.exceptions.AMQPError:
            pass
    ms = sorted(round(t * 1000) for t in confirmed)
    return {"measure": "many", "queues": len(names), "declare_s": round(declared, 1),
            "led_by_killed_node": on_victim, "all_confirmed_ms": ms[-1],
            "median_ms": statistics.median(ms), "publishers": workers}


def bench(nodes, uri, *args):
    bench_bin = nodes.binary.parent / "warren-bench"
    out = subprocess.run([str(bench_bin), "--uri", uri, "--quiet", "--queue", "backlog", "--queue-type", "quorum",
                          "--durable", "--size", "1024", *args], capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f"warren-bench failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def backlog(nodes, opts):
    alive = set(range(1, nodes.n + 1))
    conn, ch = channel(nodes.url(1))
    ch.queue_declare("backlog", durable=True, arguments={"x-queue-type": "quorum"})
    conn.close()
    leader = until("a settled leader", lambda: settled_leader(nodes, alive, "backlog"))
    behind = min(alive - {leader})
    nodes.kill(behind)
    alive.discard(behind)
    samplers = {i: Sampler(nodes.pid(i)) for i in alive}
    pub = bench(nodes, nodes.url(leader), "--mode", "publish", "--count", str(opts.messages), "--duration", "0",
                "--persistent", "--confirm", "100")
    peaks = {i: s.stop() for i, s in samplers.items()}
    after_publish = {i: rss_of(nodes.pid(i)) for i in alive}
    t0 = time.monotonic()
    nodes.start_node(behind)
    alive.add(behind)
    samplers[behind] = Sampler(nodes.pid(behind))
    until("the restarted replica caught up", lambda: settled_leader(nodes, alive, "backlog"), timeout=600, every=0.1)
    caught_up = time.monotonic() - t0
    peaks[behind] = samplers[behind].stop()
    held = {i: rss_of(nodes.pid(i)) for i in alive}
    con = bench(nodes, nodes.url(behind), "--mode", "consume", "--count", str(opts.messages), "--duration", "900",
                "--prefetch", "1000", "--multi-ack", "100")
    mib = lambda d: {str(i): round(v / 2**20) for i, v in sorted(d.items())}
    return {"measure": "backlog", "messages": opts.messages, "publish_rate": round(pub["publish_rate"]),
            "confirmed": pub["confirmed"], "replica_behind": behind, "caught_up_s": round(caught_up, 1),
            "peak_rss_mib_while_publishing": mib(peaks), "rss_mib_after_publish": mib(after_publish),
            "rss_mib_all_holding_backlog": mib(held), "consumed": con["received"],
            "consume_rate": round(con["consume_rate"])}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("measure", choices=["failover", "many", "backlog"])
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--queues", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=8, help="publishing connections in `many`")
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--binary-dir", default=str(ROOT / "target" / "release"),
                    help="where warren and warren-bench are")
    ap.add_argument("--base-port", type=int, default=5861)
    opts = ap.parse_args()
    binary = Path(opts.binary_dir) / "warren"
    if not binary.exists():
        sys.exit(f"no binary at {binary}")
    work = Path(tempfile.mkdtemp(prefix="warren-qops-"))
    nodes = WarrenNodes(binary, work, opts.base_port, opts.base_port + 20000, SECRET)
    try:
        nodes.start()
        result = {"failover": failover, "many": many, "backlog": backlog}[opts.measure](nodes, opts)
        print(json.dumps(result), flush=True)
    finally:
        nodes.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
