//! Helpers for tests against a `warren_testkit::Cluster`.

use lapin::{Channel, Connection, ConnectionProperties};
use warren_testkit::Cluster;

/// The `warren` binary the cluster tests run.
pub const BIN: &str = env!("CARGO_BIN_EXE_warren");

/// A connection to node `id` (once it serves AMQP).
pub async fn connect(c: &Cluster, id: u64) -> Connection {
    let uri = c.amqp_uri(id).await;
    tokio::time::timeout(
        super::DEADLINE,
        Connection::connect(&uri, ConnectionProperties::default()),
    )
    .await
    .expect("connect in time")
    .expect("connect")
}

/// A fresh channel.
pub async fn channel(conn: &Connection) -> Channel {
    conn.create_channel().await.expect("channel")
}
