//! A data dir written before metadata moved to Raft (records in the `meta`
//! column family) seeds group 0 at start: its durable queue, exchange,
//! binding and messages are all there, survive a restart once the old
//! records are gone, and new queues never reuse the old queue ids.

mod common;

use common::TestServer;
use lapin::options::BasicGetOptions;
use warren_core::binding::{Binding, DestinationKind};
use warren_core::exchange::{ExchangeDef, ExchangeKind};
use warren_core::message::MessageFlags;
use warren_core::queue::{Home, QueueArgs, QueueDef};
use warren_core::{FieldTable as CoreTable, Message};
use warren_store::{Op, Store, codec, keys};
use warren_testkit::client::*;
use warren_testkit::wait_for;

/// Writes what an older Warren left in its store.
async fn write_legacy_store(dir: &std::path::Path) {
    let store = Store::open(&dir.join("rocksdb")).expect("store");
    let w = store.start_writer();
    let q = QueueDef {
        name: "legacy-q".into(),
        id: 7,
        durable: true,
        exclusive_owner: None,
        auto_delete: false,
        arguments: CoreTable::default(),
        args: QueueArgs::default(),
        home: Home::default(),
        replicas: Vec::new(),
        formed: false,
    };
    let x = ExchangeDef {
        name: "legacy-x".into(),
        kind: ExchangeKind::Direct,
        durable: true,
        auto_delete: false,
        internal: false,
        arguments: CoreTable::default(),
    };
    let b = Binding {
        source: "legacy-x".into(),
        destination: "legacy-q".into(),
        kind: DestinationKind::Queue,
        routing_key: "k".into(),
        arguments: CoreTable::default(),
    };
    let body: &[u8] = b"written before raft";
    let msg = Message::new(
        "".into(),
        "legacy-q",
        &[0, 0],
        [body],
        MessageFlags {
            persistent: true,
            priority: 0,
            expires: None,
        },
    );
    w.write_sync(vec![
        Op::PutMeta(
            keys::entity(keys::QUEUE, "/", "legacy-q"),
            codec::encode_queue(&q),
        ),
        Op::PutMeta(
            keys::entity(keys::EXCHANGE, "/", "legacy-x"),
            codec::encode_exchange(&x),
        ),
        Op::PutMeta(codec::binding_key("/", &b), Vec::new()),
        Op::PutMessage {
            queue: 7,
            seq: 1,
            msg,
        },
    ])
    .await
    .expect("write");
    w.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_from_before_raft_seeds_the_metadata_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_legacy_store(dir.path()).await;
    let path = dir.path().to_path_buf();
    let mut s = TestServer::start_with(|c| c.data_dir = path).await;
    {
        let (_c, ch) = s.channel().await;
        let q = passive(&ch, "legacy-q")
            .await
            .expect("the old queue is there");
        assert_eq!(q.message_count(), 1);
        publish(&ch, "legacy-x", "k", b"via the old binding").await;
        // The old binding routes.
        wait_ready(&ch, "legacy-q", 2).await;
    }
    // Restarted: the group's log holds it all now (the old records are gone).
    s.restart().await;
    let (_c, ch) = s.channel().await;
    let m = ch
        .basic_get("legacy-q".into(), BasicGetOptions { no_ack: true })
        .await
        .expect("get")
        .expect("a message");
    assert_eq!(m.delivery.data, b"written before raft");
    // A new durable queue gets a fresh id: none of the old messages in it.
    let q = declare_with(&ch, "new-q", durable())
        .await
        .expect("declare");
    assert_eq!(q.message_count(), 0);
    s.stop().await;
    wait_for("stores closed", || warren_store::live_writers() == 0).await;
}
