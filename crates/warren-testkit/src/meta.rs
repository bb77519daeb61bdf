//! Metadata commands for tests that drive a Raft group directly (the
//! storage suite of warren-store, the meta group test of warren-cluster).

use warren_core::FieldTable;
use warren_core::meta::Command;
use warren_core::queue::Home;

/// `queue.declare` of `name` in vhost `/` by connection 1: not exclusive, not
/// auto-delete, no arguments, homed by default.
pub fn declare_queue(name: &str, durable: bool) -> Command {
    Command::DeclareQueue {
        vhost: "/".into(),
        name: name.into(),
        durable,
        exclusive: false,
        auto_delete: false,
        arguments: FieldTable::default(),
        owner: 1,
        server_named: false,
        home: Home::default(),
        replicas: Vec::new(),
    }
}
