"""What idle quorum queues cost: three Warren nodes on loopback, N quorum
queues declared (three replicas each, leaders spread), then nothing; per
node, RSS, CPU and Raft RPCs sent per second over a quiet interval.

    .venv/bin/python bench/idle_groups.py --queues 1000
    .venv/bin/python bench/idle_groups.py --queues 0 --binary target/debug/warren

Every process is stopped at the end, whatever happens. Prints one JSON
object and a table."""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pika

from compare import rss_of, wait_port  # this folder is on the path

ROOT = Path(__file__).resolve().parents[1]
SECRET = "warren-idle-groups-secret"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


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
    amqp = [opts.base_port + i for i in range(3)]
    cluster = [opts.base_port + 20000 + i for i in range(3)]
    work = Path(tempfile.mkdtemp(prefix="warren-idle-"))
    peers = ",".join(f"{i + 1}=127.0.0.1:{cluster[i]}" for i in range(3))
    env = dict(os.environ, RUST_LOG="warn", WARREN_CLUSTER_SECRET=SECRET)
    procs = []
    try:
        for i in range(3):
            procs.append(subprocess.Popen(
                [str(binary), "server", "--node-id", str(i + 1),
                 "--amqp-listen", f"127.0.0.1:{amqp[i]}",
                 "--cluster-listen", f"127.0.0.1:{cluster[i]}", "--peers", peers,
                 "--data-dir", str(work / f"node{i + 1}")],
                stdout=open(work / f"node{i + 1}.log", "ab"), stderr=subprocess.STDOUT, env=env))
        for p in amqp:
            wait_port(p)
        started = time.monotonic()
        conn = pika.BlockingConnection(pika.URLParameters(f"amqp://guest:guest@127.0.0.1:{amqp[0]}/%2f"))
        ch = conn.channel()
        for q in range(opts.queues):
            ch.queue_declare(f"idle.{q}", durable=True, arguments={"x-queue-type": "quorum"})
        conn.close()
        declared = time.monotonic() - started
        # Let elections, first snapshots and rebalancing settle.
        time.sleep(10)

        def status(i):
            out = subprocess.run([str(binary), "cluster", "status", "--json", "--server",
                                  f"127.0.0.1:{cluster[i]}"], capture_output=True, text=True,
                                 timeout=30, env=env, check=True)
            return [m for m in json.loads(out.stdout)["members"] if m["id"] == i + 1][0]

        before = [(cpu_seconds(p.pid), status(i)["raft_rpcs"]) for i, p in enumerate(procs)]
        t0 = time.monotonic()
        time.sleep(opts.quiet)
        elapsed = time.monotonic() - t0
        nodes = []
        for i, p in enumerate(procs):
            cpu, rpcs = cpu_seconds(p.pid), status(i)["raft_rpcs"]
            nodes.append({
                "node": i + 1,
                "rss_mib": round(rss_of(p.pid) / 2**20, 1),
                "cpu_percent": round(100 * (cpu - before[i][0]) / elapsed, 1),
                "raft_rpcs_per_s": round((rpcs - before[i][1]) / elapsed),
            })
        result = {"queues": opts.queues, "declare_seconds": round(declared, 1),
                  "quiet_seconds": round(elapsed, 1), "binary": str(binary), "nodes": nodes}
        print(json.dumps(result))
        print(f"\n{opts.queues} idle quorum queues, 3 nodes (declared in {declared:.1f} s)")
        print("| node | RSS MiB | CPU % of one core | Raft RPCs sent/s |")
        print("|---|---|---|---|")
        for n in nodes:
            print(f"| {n['node']} | {n['rss_mib']} | {n['cpu_percent']} | {n['raft_rpcs_per_s']} |")
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
