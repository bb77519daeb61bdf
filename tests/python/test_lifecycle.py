"""Process lifecycle of a real node: graceful SIGTERM, restart on the same data."""
import signal

import pika
import pytest

from conftest import DEADLINE


def test_sigterm_closes_clients_with_320_and_keeps_confirmed_messages(node):
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", node.port))
    ch = conn.channel()
    ch.queue_declare("kept", durable=True)
    ch.confirm_delivery()
    for i in range(100):
        ch.basic_publish("", "kept", f"m{i}".encode(), pika.BasicProperties(delivery_mode=2))
    node.proc.send_signal(signal.SIGTERM)
    assert node.proc.wait(timeout=DEADLINE) == 0, "clean exit"
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        conn.process_data_events(time_limit=1)
        ch.queue_declare("kept", passive=True)
    assert e.value.reply_code == 320
    node.start()
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", node.port))
    ch = conn.channel()
    assert ch.queue_declare("kept", passive=True).method.message_count == 100
    bodies = [ch.basic_get("kept", auto_ack=True)[2] for _ in range(100)]
    assert bodies == [f"m{i}".encode() for i in range(100)]
    conn.close()


def _start(tmp_path, args, env_extra):
    import os
    import subprocess
    from conftest import WARREN, wait_for
    data = tmp_path / "envdata"
    env = dict(os.environ, WARREN_HTTP_LISTEN="127.0.0.1:0", **env_extra)
    proc = subprocess.Popen([WARREN, "server", *args], env=env,
                            stdout=open(tmp_path / "env.log", "ab"), stderr=subprocess.STDOUT)
    addr_file = data / "amqp.addr"

    def ready():
        assert proc.poll() is None, (tmp_path / "env.log").read_text()
        return addr_file.exists() and addr_file.read_text().strip()
    addr = wait_for("warren to listen", ready)
    return proc, int(addr.rsplit(":", 1)[1])


def test_options_from_environment_and_toml_file(tmp_path):
    config = tmp_path / "warren.toml"
    config.write_text('heartbeat = 7\n[[users]]\nname = "app"\npassword = "s3cret"\n')
    proc, port = _start(tmp_path, ["--config", str(config)], {
        "WARREN_AMQP_LISTEN": "127.0.0.1:0",
        "WARREN_DATA_DIR": str(tmp_path / "envdata"),
    })
    try:
        creds = pika.PlainCredentials("app", "s3cret")
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port, credentials=creds))
        assert conn._impl.params.heartbeat == 7, "heartbeat from the file was negotiated"
        conn.close()
        with pytest.raises(pika.exceptions.ProbableAuthenticationError):
            pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))  # guest is not configured
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=DEADLINE) == 0


def _live_wal(data_dir):
    """RocksDB's live WAL: the highest-numbered `NNNNNN.log`."""
    return max((data_dir / "rocksdb").glob("*.log"), key=lambda p: int(p.stem))


def test_the_first_wal_is_a_reused_file_that_confirms_overwrite(node):
    # `warren server` prepares a reused 64 MiB WAL at start (--wal-preallocate):
    # a confirm's fdatasync then overwrites written blocks instead of growing
    # the file (docs/decisions.md, "The first WAL is a reused file").
    wal = _live_wal(node.data_dir)
    size = wal.stat().st_size
    assert size >= 64 << 20, f"{wal.name} is {size} bytes"
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", node.port))
    ch = conn.channel()
    ch.queue_declare("synced", durable=True)
    ch.confirm_delivery()
    for i in range(200):
        ch.basic_publish("", "synced", b"x" * 1024, pika.BasicProperties(delivery_mode=2))
    assert ch.queue_declare("synced", passive=True).method.message_count == 200
    assert _live_wal(node.data_dir) == wal, "still the same WAL"
    assert wal.stat().st_size == size, "200 synced publishes overwrote the file, never grew it"
    conn.close()
