"""What idle quorum queues cost: three Warren nodes on loopback, N quorum
queues declared (three replicas each, leaders spread), then nothing; per
node, RSS, CPU and Raft RPCs sent per second over a quiet interval.

    .venv/bin/python bench/idle_groups.py --queues 1000
    .venv/bin/python bench/idle_groups.py --queues 0 --binary target/debug/warren

Every process is stopped at the end, whatever happens. Prints one JSON
object and a table."""
import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pika

from nodes import WarrenNodes, cpu_seconds, rss_of  # this folder is on the path

ROOT = Path(__file__).resolve().parents[1]
SECRET = "warren-idle-groups-secret"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--queues", type=int, default=1000)
    ap.add_argument("--binary", default=str(ROOT / "target" / "release" / "warren"))
    ap.add_argument("--quiet", type=float, default=30.0, help="seconds measured")
    ap.add_argument("--base-port", type=int, default=5831)
    opts = ap.parse_args()
    binary = Path(opts.binary)
    if not binary.exists():
        sys.exit(f"no binary at {binary}")
    work = Path(tempfile.mkdtemp(prefix="warren-idle-"))
    nodes = WarrenNodes(binary, work, opts.base_port, opts.base_port + 20000, SECRET)
    try:
        nodes.start()
        started = time.monotonic()
        conn = pika.BlockingConnection(pika.URLParameters(nodes.url(1)))
        ch = conn.channel()
        for q in range(opts.queues):
            ch.queue_declare(f"idle.{q}", durable=True, arguments={"x-queue-type": "quorum"})
        conn.close()
        declared = time.monotonic() - started
        # Let elections, first snapshots and rebalancing settle.
        time.sleep(10)

        ids = range(1, nodes.n + 1)
        before = {i: (cpu_seconds(nodes.pid(i)), nodes.node_status(i)["raft_rpcs"]) for i in ids}
        t0 = time.monotonic()
        time.sleep(opts.quiet)
        elapsed = time.monotonic() - t0
        result_nodes = []
        for i in ids:
            cpu, rpcs = cpu_seconds(nodes.pid(i)), nodes.node_status(i)["raft_rpcs"]
            result_nodes.append({
                "node": i,
                "rss_mib": round(rss_of(nodes.pid(i)) / 2**20, 1),
                "cpu_percent": round(100 * (cpu - before[i][0]) / elapsed, 1),
                "raft_rpcs_per_s": round((rpcs - before[i][1]) / elapsed),
            })
        result = {"queues": opts.queues, "declare_seconds": round(declared, 1),
                  "quiet_seconds": round(elapsed, 1), "binary": str(binary), "nodes": result_nodes}
        print(json.dumps(result))
        print(f"\n{opts.queues} idle quorum queues, 3 nodes (declared in {declared:.1f} s)")
        print("| node | RSS MiB | CPU % of one core | Raft RPCs sent/s |")
        print("|---|---|---|---|")
        for n in result_nodes:
            print(f"| {n['node']} | {n['rss_mib']} | {n['cpu_percent']} | {n['raft_rpcs_per_s']} |")
    finally:
        nodes.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
