"""Drives bench/compare.sh: starts both brokers, runs the scenarios, writes the table.

Each broker runs on loopback with its own data directory under the output
directory and is stopped at the end, whatever happens."""
import argparse
import resource
import json
import shutil
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nodes import Sampler, WarrenNodes, rss_of, wait_port  # this folder is on the path

ROOT = Path(__file__).resolve().parents[1]
WARREN = ROOT / "target" / "release" / "warren"
BENCH = ROOT / "target" / "release" / "warren-bench"
RMQ_BIN = Path("/usr/lib/rabbitmq/bin")
WARREN_PORT, RMQ_PORT = 5801, 5802
# The cluster port's shared secret (RabbitMQ's nodes share an Erlang cookie).
CLUSTER_SECRET = "warren-bench-cluster-secret"

COMMON = ["--prefetch", "1000", "--multi-ack", "100", "--pipeline", "32"]
# What ordinary client code does (pika, Celery, a plain lapin loop): one
# publish at a time, one basic.ack per message, prefetch 100.
PLAIN = {"--prefetch": "100", "--multi-ack": "1", "--pipeline": "1"}
SCENARIOS = {
    1: ("transient 100 B, 1→1, no confirms",
        ["--size", "100", "--duration", "15"] + COMMON),
    2: ("persistent 1 KiB, confirms window 100, 1→1",
        ["--size", "1024", "--persistent", "--durable", "--confirm", "100", "--duration", "15"] + COMMON),
    3: ("persistent 1 KiB, confirm window 1",
        ["--size", "1024", "--persistent", "--durable", "--confirm", "1", "--duration", "10"] + COMMON),
    4: ("fan-in: 10 producers → 2 consumers, durable queue, confirms 100",
        ["--producers", "10", "--consumers", "2", "--size", "1024", "--persistent", "--durable",
         "--confirm", "100", "--duration", "15"] + COMMON),
    5: ("fanout to 10 queues, 100 B transient",
        ["--exchange", "fanout-{tag}", "--exchange-type", "fanout", "--queues", "10", "--consumers", "10",
         "--size", "100", "--duration", "15"] + COMMON),
    6: ("1,000 connections with a consumer each, 100 msg/s",
        ["--consumers", "1000", "--rate", "100", "--size", "100", "--duration", "20"] + COMMON),
    8: ("3 nodes: durable queue on node 1, producer on node 2 (confirms 100), consumer on node 3, 1 KiB persistent",
        ["--size", "1024", "--persistent", "--durable", "--confirm", "100", "--duration", "15"] + COMMON),
    9: ("quorum queue, 1 replica: persistent 1 KiB, confirms window 100, 1→1",
        ["--queue-type", "quorum", "--size", "1024", "--persistent", "--durable", "--confirm", "100",
         "--duration", "15"] + COMMON),
    10: ("3 nodes: quorum queue (3 replicas) declared on node 1, producer on node 2 (confirms 100), "
         "consumer on node 3, 1 KiB persistent",
         ["--queue-type", "quorum", "--size", "1024", "--persistent", "--durable", "--confirm", "100",
          "--duration", "15"] + COMMON),
    11: ("100 quorum queues (1 replica), a producer (confirms 100) and a consumer each, persistent 1 KiB",
         ["--queue-type", "quorum", "--queues", "100", "--producers", "100", "--consumers", "100", "--size", "1024",
          "--persistent", "--durable", "--confirm", "100", "--duration", "15"] + COMMON),
}
CLUSTER_SCENARIOS = {8, 10}
QUORUM_SCENARIOS = {9, 10, 11}


def store_counters(nodes):
    """Raft log entries and WAL syncs each node's store has written so far."""
    return [{k: nodes.node_status(i)[k] for k in ("raft_entries", "store_syncs")} for i in range(1, nodes.n + 1)]


def per_1000(before, after, confirmed):
    """Entries and syncs per 1,000 confirmed messages, the busiest node's."""
    per = lambda k: max(1000 * (a[k] - b[k]) / max(1, confirmed) for a, b in zip(after, before))
    return {"entries_per_1000": per("raft_entries"), "syncs_per_1000": per("store_syncs")}


class Warren:
    name = "warren"
    CLUSTER = 25801

    def __init__(self, out):
        self.data = out / "warren-data"
        self.proc = None

    def start(self):
        shutil.rmtree(self.data, ignore_errors=True)
        self.proc = subprocess.Popen(
            [str(WARREN), "server", "--amqp-listen", f"127.0.0.1:{WARREN_PORT}", "--http-listen", "off", "--data-dir", str(self.data),
             "--cluster-listen", f"127.0.0.1:{self.CLUSTER}"],
            stdout=open(self.data.parent / "warren.log", "ab"), stderr=subprocess.STDOUT,
            env=dict(os.environ, RUST_LOG="warn", WARREN_CLUSTER_SECRET=CLUSTER_SECRET))
        wait_port(WARREN_PORT)

    def counters(self):
        out = subprocess.run([str(WARREN), "cluster", "status", "--json", "--server", f"127.0.0.1:{self.CLUSTER}"],
                             capture_output=True, text=True, timeout=30, check=True,
                             env=dict(os.environ, WARREN_CLUSTER_SECRET=CLUSTER_SECRET))
        me = json.loads(out.stdout)["members"][0]
        return [{k: me[k] for k in ("raft_entries", "store_syncs")}]

    def pids(self):
        return [self.proc.pid]

    def bench_args(self):
        return ["--uri", f"amqp://guest:guest@127.0.0.1:{WARREN_PORT}/%2f"]

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class RabbitMQ:
    name = "rabbitmq"

    def __init__(self, out):
        self.home = out / "rabbitmq"
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "enabled_plugins").write_text("[].\n")
        (self.home / "rabbitmq.conf").write_text("loopback_users.guest = true\n")
        self.env = dict(
            os.environ, HOME=str(self.home), RABBITMQ_NODENAME="warrenbench@localhost",
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1", RABBITMQ_NODE_PORT=str(RMQ_PORT),
            RABBITMQ_DIST_PORT=str(RMQ_PORT + 20000), RABBITMQ_MNESIA_BASE=str(self.home / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.home / "log"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.home / "enabled_plugins"),
            RABBITMQ_CONFIG_FILE=str(self.home / "rabbitmq"), RABBITMQ_PID_FILE=str(self.home / "pid"))
        self.proc = None

    def start(self):
        shutil.rmtree(self.home / "mnesia", ignore_errors=True)
        self.proc = subprocess.Popen([str(RMQ_BIN / "rabbitmq-server")], env=self.env,
                                     stdout=open(self.home / "out.log", "ab"), stderr=subprocess.STDOUT)
        wait_port(RMQ_PORT, timeout=120)

    def pids(self):
        return [int((self.home / "pid").read_text().strip())]

    def bench_args(self):
        return ["--uri", f"amqp://guest:guest@127.0.0.1:{RMQ_PORT}/%2f"]

    def stop(self):
        subprocess.run([str(RMQ_BIN / "rabbitmqctl"), "-n", "warrenbench@localhost", "stop"], env=self.env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
        if self.proc:
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class WarrenCluster:
    """Three Warren nodes on loopback, formed from a static peer list."""
    name = "warren"

    def __init__(self, out):
        self.nodes = WarrenNodes(WARREN, out / "warren3", 5811, 25811, CLUSTER_SECRET)

    def start(self):
        self.nodes.start()

    def pids(self):
        return self.nodes.pids()

    def bench_args(self):
        return ["--topology-uri", self.nodes.url(1), "--uri", self.nodes.url(2), "--uri", self.nodes.url(3)]

    def counters(self):
        return store_counters(self.nodes)

    def forwarding(self):
        """gRPC stream frames per 1,000 forwarded publishes (node 2) and deliveries (node 3)."""
        n2, n3 = self.nodes.node_status(2), self.nodes.node_status(3)
        return {
            "forwarded_publishes": n2["forwarded_publishes"], "up_frames": n2["up_frames"],
            "remote_deliveries": n3["remote_deliveries"], "down_frames": n3["down_frames"],
            "frames_per_1000_publishes": 1000 * n2["up_frames"] / max(1, n2["forwarded_publishes"]),
            "frames_per_1000_deliveries": 1000 * n3["down_frames"] / max(1, n3["remote_deliveries"]),
        }

    def stop(self):
        self.nodes.stop()


class RabbitMQCluster:
    """Three RabbitMQ nodes (distinct names and ports) joined into one cluster."""
    name = "rabbitmq"
    AMQP = 5821

    def __init__(self, out):
        self.home = out / "rabbitmq3"
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "enabled_plugins").write_text("[].\n")
        (self.home / "rabbitmq.conf").write_text("loopback_users.guest = true\n")
        self.procs = []

    def node(self, i):
        return f"warrenbench{i}@localhost"

    def env(self, i):
        return dict(
            os.environ, HOME=str(self.home), RABBITMQ_NODENAME=self.node(i),
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1", RABBITMQ_NODE_PORT=str(self.AMQP + i - 1),
            RABBITMQ_DIST_PORT=str(self.AMQP + 20000 + i - 1), RABBITMQ_MNESIA_BASE=str(self.home / f"mnesia{i}"),
            RABBITMQ_LOG_BASE=str(self.home / f"log{i}"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.home / "enabled_plugins"),
            RABBITMQ_CONFIG_FILE=str(self.home / "rabbitmq"), RABBITMQ_PID_FILE=str(self.home / f"pid{i}"))

    def ctl(self, i, *args):
        subprocess.run([str(RMQ_BIN / "rabbitmqctl"), "-n", self.node(i), *args], env=self.env(i),
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)

    def start(self):
        for i in (1, 2, 3):
            shutil.rmtree(self.home / f"mnesia{i}", ignore_errors=True)
        self.procs = [subprocess.Popen([str(RMQ_BIN / "rabbitmq-server")], env=self.env(i),
                                       stdout=open(self.home / f"out{i}.log", "ab"), stderr=subprocess.STDOUT)
                      for i in (1, 2, 3)]
        for i in (1, 2, 3):
            wait_port(self.AMQP + i - 1, timeout=120)
        for i in (2, 3):
            self.ctl(i, "stop_app")
            self.ctl(i, "join_cluster", self.node(1))
            self.ctl(i, "start_app")
        for i in (2, 3):
            wait_port(self.AMQP + i - 1, timeout=120)

    def pids(self):
        return [int((self.home / f"pid{i}").read_text().strip()) for i in (1, 2, 3)]

    def uri(self, i):
        return f"amqp://guest:guest@127.0.0.1:{self.AMQP + i - 1}/%2f"

    def bench_args(self):
        return ["--topology-uri", self.uri(1), "--uri", self.uri(2), "--uri", self.uri(3)]

    def stop(self):
        for i in (3, 2, 1):
            subprocess.run([str(RMQ_BIN / "rabbitmqctl"), "-n", self.node(i), "stop"], env=self.env(i),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
        for p in self.procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        self.procs = []


def bench(broker, args, tag):
    """One warren-bench run with RSS sampling; returns (summary, peak rss, rss before).
    For a cluster, RSS is the sum over its nodes."""
    pids = broker.pids()
    before = sum(rss_of(p) for p in pids)
    samplers = [Sampler(p) for p in pids]
    args = [a.replace("{tag}", tag) for a in args]
    broker_cpu0 = sum(cpu_seconds(p) for p in pids)
    client0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run([str(BENCH), *broker.bench_args(), "--quiet", "--queue", tag, *args],
                         capture_output=True, text=True, timeout=1800)
    client1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    broker_cpu = sum(cpu_seconds(p) for p in pids) - broker_cpu0
    peak = sum(s.stop() for s in samplers)
    if out.returncode != 0:
        raise RuntimeError(f"{broker.name} {tag}: warren-bench failed: {out.stderr[-2000:]}")
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    # The bench is the only child waited for meanwhile: its CPU, user + system.
    summary["broker_cpu_s"] = broker_cpu
    summary["client_cpu_s"] = (client1.ru_utime - client0.ru_utime) + (client1.ru_stime - client0.ru_stime)
    return summary, peak, before


def cpu_seconds(pid):
    """utime + stime of a process so far (its threads included), seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def with_rate(args, rate):
    """`args` capped at `rate` messages per second per producer, unless the
    scenario sets its own rate."""
    if not rate or "--rate" in args:
        return args
    return [*args, "--rate", str(rate)]


def with_profile(args, profile):
    """`args` as the profile's client runs them: "pipelined" as written,
    "plain" with PLAIN's values in place of the pipelining ones."""
    if profile != "plain":
        return args
    out = list(args)
    for i in range(len(out) - 1):
        if out[i] in PLAIN:
            out[i + 1] = PLAIN[out[i]]
    return out


def cpu_per_message(r, messages):
    """Broker and client CPU, µs per message."""
    n = max(1, messages)
    return {"broker_us": 1e6 * r["broker_cpu_s"] / n, "client_us": 1e6 * r["client_cpu_s"] / n}


def fsync_latency_us(directory, n=200):
    fd, path = tempfile.mkstemp(dir=directory)
    samples = []
    try:
        for _ in range(n):
            os.write(fd, b"x" * 4096)
            t = time.perf_counter()
            os.fsync(fd)
            samples.append((time.perf_counter() - t) * 1e6)
    finally:
        os.close(fd)
        os.unlink(path)
    return statistics.median(samples)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--scenarios", default="1,2,3,4,5,6,7")
    ap.add_argument("--backlog", type=int, default=1_000_000, help="messages in scenario 7")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--from-json", help="only rewrite the report from an earlier compare.json")
    ap.add_argument("--rate", type=int, default=0,
                    help="cap every producer at this many msg/s (equal load for both brokers, for CPU per message)")
    ap.add_argument("--profile", choices=["pipelined", "plain"], default="pipelined",
                    help="pipelined: warren-bench's batching client; plain: one publish at a time, "
                         "one ack per message, prefetch 100 (what ordinary client code does)")
    opts = ap.parse_args()
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    if opts.from_json:
        saved = json.loads(Path(opts.from_json).read_text())
        raw = {b: {int(s): rs for s, rs in by.items()} for b, by in saved["raw"].items()}
        opts.rounds = saved["rounds"]
        opts.backlog = saved.get("backlog", opts.backlog)
        opts.rate = saved.get("rate", 0)
        opts.profile = saved.get("profile", "pipelined")
        write_report(out, raw, sorted(raw["warren"]), saved["fsync_us"], opts)
        return
    work = Path(tempfile.mkdtemp(prefix="warren-compare-"))
    chosen = [int(s) for s in opts.scenarios.split(",")]
    singles = [Warren(work), RabbitMQ(work)]
    clusters = [WarrenCluster(work), RabbitMQCluster(work)]
    results = {b.name: {s: [] for s in chosen} for b in singles}
    # The disk's sync time drifts by 2x within minutes on a shared machine:
    # scenario 3 is judged against syncs measured beside each of its runs.
    fsyncs = []
    try:
        for rnd in range(opts.rounds):
            for s in chosen:
                brokers = clusters if s in CLUSTER_SCENARIOS else singles
                order = brokers if rnd % 2 == 0 else list(reversed(brokers))
                for b in order:
                    # A fresh broker per run: no state or allocator residue from
                    # the previous scenario, so peak RSS belongs to this one.
                    if s == 3:
                        fsyncs.append(fsync_latency_us(work))
                    b.start()
                    tag = f"s{s}-r{rnd}"
                    if s == 7:
                        pub, peak1, before = bench(b, ["--mode", "publish", "--count", str(opts.backlog), "--duration", "0",
                                                       "--size", "1024", "--persistent", "--durable", "--confirm", "100"], tag)
                        con, peak2, _ = bench(b, with_profile(["--mode", "consume", "--count", str(opts.backlog),
                                                               "--duration", "600", "--size", "1024", "--durable"]
                                                              + COMMON, opts.profile), tag)
                        # End-to-end latency means nothing across two runs: report none.
                        r = {"publish_rate": pub["publish_rate"], "consume_rate": con["consume_rate"],
                             "latency_us": pub["confirm_latency_us"], "peak_rss": max(peak1, peak2),
                             "rss_before": before,
                             "broker_cpu_s": pub["broker_cpu_s"] + con["broker_cpu_s"],
                             "client_cpu_s": pub["client_cpu_s"] + con["client_cpu_s"]}
                        r["cpu"] = cpu_per_message(r, opts.backlog)
                    else:
                        quorum = s in QUORUM_SCENARIOS and hasattr(b, "counters")
                        c0 = b.counters() if quorum else None
                        summary, peak, before = bench(b, with_rate(with_profile(SCENARIOS[s][1], opts.profile), opts.rate), tag)
                        r = dict(summary, peak_rss=peak, rss_before=before)
                        r["cpu"] = cpu_per_message(r, summary["received"] or summary["sent"])
                        if quorum:
                            r["batching"] = per_1000(c0, b.counters(), summary["confirmed"])
                        if hasattr(b, "forwarding"):
                            r["forwarding"] = b.forwarding()
                    b.stop()
                    results[b.name][s].append(r)
                    print(f"round {rnd + 1} scenario {s} {b.name}: consume {r['consume_rate']:.0f} msg/s, "
                          f"p99 {r['latency_us']['p99'] / 1000:.2f} ms, peak RSS {r['peak_rss'] >> 20} MiB, "
                          f"CPU per message broker {r['cpu']['broker_us']:.1f} µs client {r['cpu']['client_us']:.1f} µs"
                          + (f", confirm p50 {r['confirm_latency_us']['p50']} µs (fsync {fsyncs[-1]:.0f} µs just before)"
                             if s == 3 else ""),
                          flush=True)
    finally:
        for b in singles + clusters:
            b.stop()
    fsync = statistics.median(fsyncs + [fsync_latency_us(work)])
    write_report(out, results, chosen, fsync, opts)


def med(rs, key):
    return statistics.median(k(r) for r in rs for k in [key])


def write_report(out, results, chosen, fsync, opts):
    rows, table = [], []
    for s in chosen:
        w, r = results["warren"][s], results["rabbitmq"][s]
        rate = lambda r_: r_["consume_rate"]
        p99 = lambda r_: r_["latency_us"]["p99"] / 1000
        rss = lambda r_: r_["peak_rss"] / 2**20
        row = {
            "scenario": s,
            "title": SCENARIOS[s][0] if s in SCENARIOS else f"backlog of {opts.backlog} persistent 1 KiB",
            "warren_msgs": med(w, rate), "rabbitmq_msgs": med(r, rate),
            "warren_p99_ms": med(w, p99), "rabbitmq_p99_ms": med(r, p99),
            "warren_rss_mib": med(w, rss), "rabbitmq_rss_mib": med(r, rss),
        }
        row["ratio"] = row["warren_msgs"] / row["rabbitmq_msgs"] if row["rabbitmq_msgs"] else float("nan")
        if all("cpu" in r_ for r_ in w + r):
            for name, rs in (("warren", w), ("rabbitmq", r)):
                row[f"{name}_broker_us"] = med(rs, lambda r_: r_["cpu"]["broker_us"])
                row[f"{name}_client_us"] = med(rs, lambda r_: r_["cpu"]["client_us"])
        if s == 7:
            row["warren_publish_msgs"] = med(w, lambda r_: r_["publish_rate"])
            row["rabbitmq_publish_msgs"] = med(r, lambda r_: r_["publish_rate"])
        if s == 3:
            c50 = lambda r_: r_["confirm_latency_us"]["p50"]
            row["warren_confirm_p50_us"] = med(w, c50)
            row["rabbitmq_confirm_p50_us"] = med(r, c50)
        if s == 8:
            row["warren_frames_per_1000_publishes"] = med(w, lambda r_: r_["forwarding"]["frames_per_1000_publishes"])
            row["warren_frames_per_1000_deliveries"] = med(w, lambda r_: r_["forwarding"]["frames_per_1000_deliveries"])
        if s in QUORUM_SCENARIOS:
            row["warren_entries_per_1000"] = med(w, lambda r_: r_["batching"]["entries_per_1000"])
            row["warren_syncs_per_1000"] = med(w, lambda r_: r_["batching"]["syncs_per_1000"])
        if s == 6:
            row["warren_kib_per_conn"] = med(w, lambda r_: (r_["peak_rss"] - r_["rss_before"]) / 1024 / 1000)
            row["rabbitmq_kib_per_conn"] = med(r, lambda r_: (r_["peak_rss"] - r_["rss_before"]) / 1024 / 1000)
        rows.append(row)
        table.append(
            f"| {s} | {row['title']} | {row['warren_msgs']:.0f} | {row['rabbitmq_msgs']:.0f} | {row['ratio']:.2f} | "
            f"{row['warren_p99_ms']:.2f} | {row['rabbitmq_p99_ms']:.2f} | {row['warren_rss_mib']:.0f} | {row['rabbitmq_rss_mib']:.0f} |")
    md = [
        f"Rounds: {opts.rounds} (median shown). Disk fsync latency (4 KiB write + fsync, median; beside each scenario 3 run and at the end): {fsync:.0f} µs. "
        f"CPUs: {os.cpu_count()}. Client profile: {getattr(opts, 'profile', 'pipelined')} "
        f"({'one publish at a time, one ack per message, prefetch 100' if getattr(opts, 'profile', '') == 'plain' else 'publishes pipelined 32 deep, acks every 100, prefetch 1000'}).",
        "",
        "Rates are consumed msg/s; p99 is publish-to-delivery latency (scenario 7: publish-to-confirm).",
        "",
        "| # | scenario | Warren msg/s | RabbitMQ msg/s | ratio | Warren p99 ms | RabbitMQ p99 ms | Warren peak RSS MiB | RabbitMQ peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|",
        *table,
    ]
    cpu_rows = [r_ for r_ in rows if "warren_broker_us" in r_]
    if cpu_rows:
        load = f"every producer capped at {opts.rate} msg/s" if getattr(opts, "rate", 0) else "each broker at its own rate"
        md += [
            "",
            f"CPU per message consumed (utime + stime over the run; {load}): the broker's processes, "
            "and warren-bench's own, which shares the machine's cores with the broker.",
            "",
            "| # | Warren broker µs | RabbitMQ broker µs | ratio | client µs with Warren | client µs with RabbitMQ |",
            "|---|---|---|---|---|---|",
            *[f"| {r_['scenario']} | {r_['warren_broker_us']:.1f} | {r_['rabbitmq_broker_us']:.1f} | "
              f"{r_['warren_broker_us'] / max(1e-9, r_['rabbitmq_broker_us']):.2f} | {r_['warren_client_us']:.1f} | "
              f"{r_['rabbitmq_client_us']:.1f} |" for r_ in cpu_rows],
        ]
    for row in rows:
        if "warren_publish_msgs" in row:
            md.append(f"\nScenario 7 publish rates: Warren {row['warren_publish_msgs']:.0f} msg/s, "
                      f"RabbitMQ {row['rabbitmq_publish_msgs']:.0f} msg/s.")
        if "warren_confirm_p50_us" in row:
            md.append(f"\nScenario 3 publish-to-confirm latency, median: Warren {row['warren_confirm_p50_us']:.0f} µs "
                      f"({row['warren_confirm_p50_us'] / fsync:.2f}× fsync), RabbitMQ {row['rabbitmq_confirm_p50_us']:.0f} µs "
                      f"({row['rabbitmq_confirm_p50_us'] / fsync:.2f}× fsync).")
        if "warren_frames_per_1000_publishes" in row:
            md.append(f"\nScenario 8 forwarding between Warren nodes: "
                      f"{row['warren_frames_per_1000_publishes']:.1f} gRPC stream frames per 1,000 forwarded publishes "
                      f"(node 2 → node 1), {row['warren_frames_per_1000_deliveries']:.1f} per 1,000 deliveries "
                      f"(node 1 → node 3); RSS is the sum over the three nodes.")
        if "warren_entries_per_1000" in row:
            md.append(f"\nScenario {row['scenario']} batching (busiest Warren node): "
                      f"{row['warren_entries_per_1000']:.1f} Raft log entries and "
                      f"{row['warren_syncs_per_1000']:.1f} WAL syncs per 1,000 confirmed messages.")
        if "warren_kib_per_conn" in row:
            md.append(f"\nScenario 6 RSS per connection: Warren {row['warren_kib_per_conn']:.1f} KiB, "
                      f"RabbitMQ {row['rabbitmq_kib_per_conn']:.1f} KiB.")
    text = "\n".join(md) + "\n"
    (out / "compare.md").write_text(text)
    (out / "compare.json").write_text(json.dumps({"fsync_us": fsync, "rounds": opts.rounds, "backlog": opts.backlog,
                                                  "rate": getattr(opts, "rate", 0), "rows": rows,
                                                  "profile": getattr(opts, "profile", "pipelined"),
                                                  "raw": results}, indent=2))
    print(text)


if __name__ == "__main__":
    sys.exit(main())
