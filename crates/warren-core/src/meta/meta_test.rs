use proptest::prelude::*;

use super::*;
use crate::binding::{Binding, DestinationKind};
use crate::queue::{ConnectionId, Home};
use crate::{AMQPValue, FieldTable, ReplyCode};

const VHOST: &str = "/";

fn declare_exchange(name: &str, kind: &str, auto_delete: bool) -> Command {
    Command::DeclareExchange {
        vhost: VHOST.into(),
        name: name.into(),
        kind: kind.into(),
        durable: true,
        auto_delete,
        internal: false,
        arguments: FieldTable::default(),
    }
}

fn declare_queue(name: &str, exclusive: bool, owner: ConnectionId) -> Command {
    Command::DeclareQueue {
        vhost: VHOST.into(),
        name: name.into(),
        durable: !exclusive,
        exclusive,
        auto_delete: false,
        arguments: FieldTable::default(),
        owner,
        server_named: false,
        home: Home { node: 1, epoch: 1 },
        replicas: Vec::new(),
    }
}

fn binding(source: &str, dest: &str, kind: DestinationKind, key: &str) -> Binding {
    Binding {
        source: source.into(),
        destination: dest.into(),
        kind,
        routing_key: key.into(),
        arguments: FieldTable::default(),
    }
}

fn bind(source: &str, dest: &str, kind: DestinationKind, key: &str, conn: ConnectionId) -> Command {
    Command::Bind {
        vhost: VHOST.into(),
        binding: binding(source, dest, kind, key),
        conn,
    }
}

#[test]
fn queue_ids_come_from_the_state_machine() {
    let mut m = MetaState::new();
    let Ok(Outcome::QueueDeclared { queue: a, created }) = m.apply(&declare_queue("a", false, 1))
    else {
        panic!("declared");
    };
    assert!(created);
    let Ok(Outcome::QueueDeclared {
        queue: again,
        created,
    }) = m.apply(&declare_queue("a", false, 2))
    else {
        panic!("redeclared");
    };
    assert!(!created, "an equivalent redeclare creates nothing");
    assert_eq!(again.id, a.id);
    let Ok(Outcome::QueueDeclared { queue: b, .. }) = m.apply(&declare_queue("b", false, 1)) else {
        panic!("declared");
    };
    assert_eq!(b.id, a.id + 1, "a redeclare does not use up an id");
}

#[test]
fn errors_are_decided_by_apply_and_change_nothing() {
    let mut m = MetaState::new();
    m.apply(&declare_queue("q", true, 1)).expect("declare");
    let before = m.snapshot();
    let err = m.apply(&declare_queue("q", true, 2)).expect_err("locked");
    assert_eq!(err.code, ReplyCode::ResourceLocked);
    let err = m
        .apply(&Command::DeleteQueue {
            vhost: VHOST.into(),
            name: "q".into(),
            conn: Some(2),
            id: None,
        })
        .expect_err("locked");
    assert_eq!(err.code, ReplyCode::ResourceLocked);
    let err = m
        .apply(&declare_exchange("x", "no-such-type", false))
        .expect_err("bad type");
    assert_eq!(err.code, ReplyCode::PreconditionFailed);
    let err = m
        .apply(&bind("missing", "q", DestinationKind::Queue, "k", 1))
        .expect_err("no exchange");
    assert_eq!(err.code, ReplyCode::NotFound);
    let err = m
        .apply(&Command::DeclareQueue {
            vhost: "other".into(),
            name: "q".into(),
            durable: false,
            exclusive: false,
            auto_delete: false,
            arguments: FieldTable::default(),
            owner: 1,
            server_named: false,
            home: Home::default(),
            replicas: Vec::new(),
        })
        .expect_err("no vhost");
    assert_eq!(err.code, ReplyCode::NotAllowed);
    assert_eq!(m.snapshot(), before);
}

fn declare_on(name: &str, durable: bool, exclusive: bool, node: u64, epoch: u64) -> Command {
    Command::DeclareQueue {
        vhost: VHOST.into(),
        name: name.into(),
        durable,
        exclusive,
        auto_delete: false,
        arguments: FieldTable::default(),
        owner: crate::queue::connection_id(node, epoch, 1),
        server_named: false,
        home: Home { node, epoch },
        replicas: Vec::new(),
    }
}

#[test]
fn a_restarted_node_loses_its_transient_and_exclusive_queues_of_earlier_epochs() {
    let mut m = MetaState::new();
    m.apply(&declare_on("durable-2", true, false, 2, 1))
        .expect("declare");
    m.apply(&declare_on("transient-2", false, false, 2, 1))
        .expect("declare");
    m.apply(&declare_on("exclusive-2", true, true, 2, 1))
        .expect("declare");
    m.apply(&declare_on("transient-2-now", false, false, 2, 2))
        .expect("declare");
    m.apply(&declare_on("transient-3", false, false, 3, 1))
        .expect("declare");
    let Ok(Outcome::QueuesDeleted(gone)) = m.apply(&Command::DropNodeQueues {
        node: 2,
        before_epoch: 2,
    }) else {
        panic!("dropped");
    };
    let names: Vec<&str> = gone.iter().map(|(q, _)| &*q.name).collect();
    assert_eq!(names, ["exclusive-2", "transient-2"]);
    let v = m.vhost(VHOST).expect("vhost");
    for kept in ["durable-2", "transient-2-now", "transient-3"] {
        assert!(v.queue(kept).is_some(), "{kept} kept");
    }
    // Declared down: every transient queue of node 2 goes, durable ones stay.
    let Ok(Outcome::QueuesDeleted(gone)) = m.apply(&Command::DropNodeQueues {
        node: 2,
        before_epoch: u64::MAX,
    }) else {
        panic!("dropped");
    };
    assert_eq!(gone.len(), 1);
    assert!(m.vhost(VHOST).expect("vhost").queue("durable-2").is_some());
}

#[test]
fn a_cluster_restart_drops_every_transient_thing() {
    let mut m = MetaState::new();
    m.apply(&declare_exchange("durable-x", "topic", false))
        .expect("declare");
    let mut transient = declare_exchange("transient-x", "topic", false);
    if let Command::DeclareExchange { durable, .. } = &mut transient {
        *durable = false;
    }
    m.apply(&transient).expect("declare");
    m.apply(&declare_on("dq", true, false, 1, 1))
        .expect("declare");
    m.apply(&declare_on("tq", false, false, 1, 1))
        .expect("declare");
    m.apply(&bind("transient-x", "dq", DestinationKind::Queue, "#", 1))
        .expect("bind");
    m.apply(&bind("durable-x", "dq", DestinationKind::Queue, "#", 1))
        .expect("bind");
    let Ok(Outcome::QueuesDeleted(gone)) = m.apply(&Command::DropTransient) else {
        panic!("dropped");
    };
    assert_eq!(gone.len(), 1);
    let v = m.vhost(VHOST).expect("vhost");
    assert!(v.exchange("transient-x").is_none());
    assert!(v.exchange("durable-x").is_some());
    assert!(v.queue("tq").is_none());
    assert_eq!(v.bindings().count(), 1, "only the durable binding is left");
}

#[test]
fn a_delete_guarded_by_id_spares_a_queue_declared_again_under_the_name() {
    let mut m = MetaState::new();
    let Ok(Outcome::QueueDeclared { queue: old, .. }) = m.apply(&declare_queue("q", false, 1))
    else {
        panic!("declared");
    };
    let delete = |id| Command::DeleteQueue {
        vhost: VHOST.into(),
        name: "q".into(),
        conn: None,
        id: Some(id),
    };
    m.apply(&delete(old.id)).expect("deleted");
    let Ok(Outcome::QueueDeclared { queue: new, .. }) = m.apply(&declare_queue("q", false, 1))
    else {
        panic!("declared again");
    };
    assert_ne!(new.id, old.id);
    // A late auto-delete of the old queue finds another one: 404, kept.
    let err = m.apply(&delete(old.id)).expect_err("not that queue");
    assert_eq!(err.code, ReplyCode::NotFound);
    assert!(m.vhost(VHOST).expect("vhost").queue("q").is_some());
}

#[test]
fn a_seed_applies_to_a_pristine_state_only() {
    let mut old = MetaState::new();
    old.apply(&declare_queue("q", false, 1)).expect("declare");
    old.apply(&bind("amq.topic", "q", DestinationKind::Queue, "#", 1))
        .expect("bind");
    let image = old.snapshot();
    let mut m = MetaState::new();
    assert!(m.is_pristine());
    assert_eq!(
        m.apply(&Command::Seed(image.clone())),
        Ok(Outcome::Seeded { dropped: 0 })
    );
    assert_eq!(m.snapshot(), image);
    assert!(!m.is_pristine());
    let err = m
        .apply(&Command::Seed(image.clone()))
        .expect_err("second seed");
    assert_eq!(err.code, ReplyCode::PreconditionFailed);
    assert_eq!(m.snapshot(), image);
}

#[test]
fn the_first_cluster_id_committed_stays() {
    let mut m = MetaState::new();
    assert_eq!(m.cluster_id(), None);
    assert_eq!(
        m.apply(&Command::ChooseClusterId(7)),
        Ok(Outcome::ClusterId(7))
    );
    assert_eq!(
        m.apply(&Command::ChooseClusterId(9)),
        Ok(Outcome::ClusterId(7))
    );
    assert!(
        m.is_pristine(),
        "an id is not metadata a seed would overwrite"
    );
    let (restored, _) = MetaState::restore(&m.snapshot());
    assert_eq!(restored.cluster_id(), Some(7));
    // A seed (a single node's old store) keeps the cluster's id.
    let mut old = MetaState::new();
    old.apply(&declare_queue("q", false, 1)).expect("declare");
    m.apply(&Command::Seed(old.snapshot())).expect("seed");
    assert_eq!(m.cluster_id(), Some(7));
}

#[test]
fn dropping_a_connection_deletes_its_exclusive_queues_and_their_bindings() {
    let mut m = MetaState::new();
    m.apply(&declare_queue("mine-b", true, 7)).expect("declare");
    m.apply(&declare_queue("mine-a", true, 7)).expect("declare");
    m.apply(&declare_queue("shared", false, 7))
        .expect("declare");
    m.apply(&bind("amq.topic", "mine-a", DestinationKind::Queue, "#", 7))
        .expect("bind");
    let Ok(Outcome::QueuesDeleted(gone)) = m.apply(&Command::DropConnection { conn: 7 }) else {
        panic!("dropped");
    };
    let names: Vec<&str> = gone.iter().map(|(q, _)| &*q.name).collect();
    assert_eq!(names, ["mine-a", "mine-b"]);
    assert_eq!(gone[0].1.bindings.len(), 1);
    let v = m.vhost(VHOST).expect("vhost");
    assert!(v.queue("shared").is_some());
    assert_eq!(v.bindings().count(), 0);
}

#[test]
fn a_snapshot_restores_the_same_state_and_routing() {
    let mut m = MetaState::new();
    for cmd in [
        declare_exchange("logs", "topic", false),
        declare_exchange("hdr", "headers", false),
        declare_queue("q1", false, 1),
        declare_queue("q2", false, 1),
        bind("logs", "q1", DestinationKind::Queue, "*.error", 1),
        bind("logs", "hdr", DestinationKind::Exchange, "#", 1),
        Command::Bind {
            vhost: VHOST.into(),
            binding: Binding {
                arguments: {
                    let mut t = FieldTable::default();
                    t.insert("x-match".into(), AMQPValue::LongString("any".into()));
                    t.insert("level".into(), AMQPValue::LongString("high".into()));
                    t
                },
                ..binding("hdr", "q2", DestinationKind::Queue, "")
            },
            conn: 1,
        },
    ] {
        m.apply(&cmd).expect("apply");
    }
    let snap = m.snapshot();
    let (restored, dropped) = MetaState::restore(&snap);
    assert_eq!(dropped, 0);
    let wire = serde_json::to_string(&snap).expect("encode");
    let decoded: MetaSnapshot = serde_json::from_str(&wire).expect("decode");
    assert_eq!(decoded, snap, "header arguments survive encoding");
    assert_eq!(restored.snapshot(), snap);
    let route = |m: &MetaState, key: &str| {
        let mut out = smallvec::SmallVec::new();
        m.vhost(VHOST)
            .expect("vhost")
            .route("logs", key, None, &mut out)
            .expect("route");
        out.to_vec()
    };
    assert_eq!(route(&m, "app.error"), route(&restored, "app.error"));
    assert_eq!(route(&restored, "app.error").len(), 1);
}

#[test]
fn a_deleted_vhost_takes_its_queues_and_permissions() {
    let mut m = MetaState::new();
    let add = Command::AddVhost {
        name: "prod".into(),
    };
    assert_eq!(m.apply(&add), Ok(Outcome::VhostAdded));
    assert_eq!(
        m.apply(&add).expect_err("exists").code,
        ReplyCode::PreconditionFailed
    );
    assert_eq!(m.vhost_names().collect::<Vec<_>>(), ["/", "prod"]);
    let prod = m.vhost("prod").expect("prod");
    assert!(
        prod.exchange("amq.topic").is_some(),
        "predeclared exchanges"
    );
    let mut q = declare_queue("orders", false, 1);
    if let Command::DeclareQueue { vhost, .. } = &mut q {
        *vhost = "prod".into();
    }
    m.apply(&q).expect("declare in prod");
    m.apply(&declare_queue("orders", false, 1))
        .expect("declare in /");
    m.apply(&Command::AddUser(UserDef {
        name: "bob".into(),
        password: None,
        tags: Vec::new(),
    }))
    .expect("user");
    m.apply(&Command::SetPermissions(PermissionEntry {
        vhost: "prod".into(),
        user: "bob".into(),
        permission: crate::access::Permission::all(),
    }))
    .expect("grant");

    let Ok(Outcome::QueuesDeleted(gone)) = m.apply(&Command::DeleteVhost {
        name: "prod".into(),
    }) else {
        panic!("vhost deleted");
    };
    assert_eq!(gone.len(), 1);
    assert_eq!(&*gone[0].0.name, "orders");
    assert!(m.vhost("prod").is_none());
    assert!(m.access().permission("prod", "bob").is_none());
    assert!(m.vhost(VHOST).and_then(|v| v.queue("orders")).is_some());
    let e = m
        .apply(&Command::DeleteVhost { name: VHOST.into() })
        .expect_err("/ stays");
    assert_eq!(e.code, ReplyCode::PreconditionFailed);
    let e = m
        .apply(&Command::DeleteVhost {
            name: "prod".into(),
        })
        .expect_err("gone");
    assert_eq!(e.code, ReplyCode::NotFound);
}

/// Commands over a small universe of names, so that sequences collide often:
/// redeclares with other properties, binds to deleted queues, cycles of
/// exchange-to-exchange bindings, auto-delete cascades.
fn command() -> impl Strategy<Value = Command> {
    let exchange = prop::sample::select(vec!["e0", "e1", "e2", "amq.topic", "amq.fanout", ""]);
    let queue = prop::sample::select(vec!["q0", "q1", "q2", "amq.gen-x"]);
    let kind = prop::sample::select(vec!["direct", "fanout", "topic", "headers", "bogus"]);
    let key = prop::sample::select(vec!["a", "a.b", "#", "*.b", ""]);
    let conn = 1u64..4;
    prop_oneof![
        (exchange.clone(), kind, any::<bool>(), any::<bool>()).prop_map(|(e, k, durable, ad)| {
            Command::DeclareExchange {
                vhost: VHOST.into(),
                name: e.into(),
                kind: k.into(),
                durable,
                auto_delete: ad,
                internal: false,
                arguments: FieldTable::default(),
            }
        }),
        (exchange.clone(), any::<bool>()).prop_map(|(e, if_unused)| Command::DeleteExchange {
            vhost: VHOST.into(),
            name: e.into(),
            if_unused,
        }),
        (queue.clone(), any::<bool>(), any::<bool>(), conn.clone()).prop_map(
            |(q, durable, exclusive, owner)| Command::DeclareQueue {
                vhost: VHOST.into(),
                name: q.into(),
                durable,
                exclusive,
                auto_delete: false,
                arguments: FieldTable::default(),
                owner,
                server_named: q.starts_with("amq.gen"),
                home: Home {
                    node: owner % 3,
                    epoch: owner % 2,
                },
                replicas: Vec::new(),
            }
        ),
        Just(Command::DropTransient),
        (0u64..3, 0u64..3)
            .prop_map(|(node, before_epoch)| Command::DropNodeQueues { node, before_epoch }),
        (
            queue.clone(),
            prop::option::of(conn.clone()),
            prop::option::of(1u64..6)
        )
            .prop_map(|(q, conn, id)| Command::DeleteQueue {
                vhost: VHOST.into(),
                name: q.into(),
                conn,
                id,
            }),
        (exchange.clone(), queue.clone(), key.clone(), conn.clone()).prop_map(|(e, q, k, c)| bind(
            e,
            q,
            DestinationKind::Queue,
            k,
            c
        )),
        (
            exchange.clone(),
            exchange.clone(),
            key.clone(),
            conn.clone()
        )
            .prop_map(|(s, d, k, c)| bind(s, d, DestinationKind::Exchange, k, c)),
        (exchange.clone(), queue, key, conn.clone()).prop_map(|(e, q, k, c)| Command::Unbind {
            vhost: VHOST.into(),
            binding: binding(e, q, DestinationKind::Queue, k),
            conn: c,
        }),
        conn.prop_map(|conn| Command::DropConnection { conn }),
        access_command(),
    ]
}

/// Users and permissions over two users and two vhosts (one missing).
fn access_command() -> impl Strategy<Value = Command> {
    let user = prop::sample::select(vec!["u0", "u1"]);
    let vhost = prop::sample::select(vec![VHOST, "missing"]);
    let perm = prop::sample::select(vec![".*", "^q", ""]);
    let def = |name: &str, salt: u8| UserDef {
        name: name.into(),
        password: Some(crate::access::PasswordHash::new(
            crate::access::HashAlgorithm::Sha256,
            [salt; 4],
            "pw",
        )),
        tags: vec!["administrator".into()],
    };
    prop_oneof![
        (user.clone(), any::<u8>()).prop_map(move |(u, salt)| Command::AddUser(def(u, salt))),
        user.clone()
            .prop_map(|u| Command::DeleteUser { name: u.into() }),
        (vhost.clone(), user.clone(), perm.clone(), perm).prop_map(|(v, u, c, w)| {
            Command::SetPermissions(PermissionEntry {
                vhost: v.into(),
                user: u.into(),
                permission: crate::access::Permission::new(c, w, ".*").expect("valid"),
            })
        }),
        (vhost.clone(), user.clone()).prop_map(|(v, u)| Command::ClearPermissions {
            vhost: v.into(),
            user: u.into(),
        }),
        vhost
            .clone()
            .prop_map(|v| Command::AddVhost { name: v.into() }),
        vhost.prop_map(|v| Command::DeleteVhost { name: v.into() }),
        user.prop_map(move |u| Command::SeedUsers {
            users: vec![def(u, 9)],
            permissions: vec![PermissionEntry {
                vhost: VHOST.into(),
                user: u.into(),
                permission: crate::access::Permission::all(),
            }],
        }),
    ]
}

proptest! {
    /// The replicated-state-machine property: two fresh states fed the same
    /// log agree on every outcome and end in the same state, and a snapshot
    /// taken at the end restores that state.
    #[test]
    fn the_same_log_gives_the_same_state(log in prop::collection::vec(command(), 0..80)) {
        let (mut a, mut b) = (MetaState::new(), MetaState::new());
        for cmd in &log {
            prop_assert_eq!(a.apply(cmd), b.apply(cmd));
        }
        let snap = a.snapshot();
        prop_assert_eq!(&snap, &b.snapshot());
        let (restored, dropped) = MetaState::restore(&snap);
        prop_assert_eq!(dropped, 0);
        prop_assert_eq!(&restored.snapshot(), &snap);
        // What travels in log entries and snapshots survives encoding.
        let wire = serde_json::to_vec(&(&log, &snap)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let (log2, snap2): (Vec<Command>, MetaSnapshot) =
            serde_json::from_slice(&wire).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&log2, &log);
        prop_assert_eq!(&snap2, &snap);
    }
}
