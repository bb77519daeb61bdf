use smallvec::SmallVec;

use super::*;
use crate::binding::DestinationKind;
use crate::{AMQPValue, QueueId, ReplyCode};

fn ex<'a>(name: &'a str, kind: &'a str, args: &'a FieldTable) -> ExchangeDeclare<'a> {
    ExchangeDeclare {
        name,
        kind,
        passive: false,
        durable: false,
        auto_delete: false,
        internal: false,
        arguments: args,
    }
}

fn q<'a>(name: &'a str, args: &'a FieldTable) -> QueueDeclare<'a> {
    QueueDeclare {
        name,
        passive: false,
        durable: false,
        exclusive: false,
        auto_delete: false,
        arguments: args,
        owner: 1,
        server_named: false,
        home: crate::queue::Home::default(),
        replicas: &[],
    }
}

fn bind(v: &mut VHost, queue: &str, exchange: &str, key: &str) {
    v.bind(
        Binding {
            source: exchange.into(),
            destination: queue.into(),
            kind: DestinationKind::Queue,
            routing_key: key.into(),
            arguments: FieldTable::default(),
        },
        1,
    )
    .expect("bind");
}

fn route(v: &VHost, exchange: &str, key: &str) -> Vec<QueueId> {
    let mut out = SmallVec::new();
    v.route(exchange, key, None, &mut out).expect("route");
    out.to_vec()
}

#[test]
fn predeclared_and_reserved() {
    let mut v = VHost::new("/");
    let none = FieldTable::default();
    for (name, _) in PREDECLARED {
        assert!(v.exchange(name).is_some());
    }
    let e = v
        .declare_exchange(&ex("amq.foo", "direct", &none))
        .expect_err("reserved");
    assert_eq!(e.code, ReplyCode::AccessRefused);
    let e = v
        .declare_queue(&q("amq.q", &none), 1)
        .expect_err("reserved");
    assert_eq!(e.code, ReplyCode::AccessRefused);
    let e = v
        .declare_exchange(&ex("x", "nonsense", &none))
        .expect_err("type");
    assert_eq!(e.code, ReplyCode::PreconditionFailed);
    let mut passive = ex("missing", "direct", &none);
    passive.passive = true;
    assert_eq!(
        v.declare_exchange(&passive).expect_err("404").code,
        ReplyCode::NotFound
    );
    assert_eq!(
        v.delete_exchange("amq.direct", false)
            .expect_err("403")
            .code,
        ReplyCode::AccessRefused
    );
}

#[test]
fn redeclare_must_be_equivalent() {
    let mut v = VHost::new("/");
    let none = FieldTable::default();
    assert!(
        v.declare_exchange(&ex("logs", "fanout", &none))
            .expect("new")
    );
    assert!(
        !v.declare_exchange(&ex("logs", "fanout", &none))
            .expect("same")
    );
    let e = v
        .declare_exchange(&ex("logs", "direct", &none))
        .expect_err("type differs");
    assert_eq!(e.code, ReplyCode::PreconditionFailed);
    assert!(e.text.contains("inequivalent arg 'type'"), "{}", e.text);

    let (_, created) = v.declare_queue(&q("task_queue", &none), 1).expect("new");
    assert!(created);
    let mut durable = q("task_queue", &none);
    durable.durable = true;
    let e = v.declare_queue(&durable, 2).expect_err("durable differs");
    assert_eq!(e.code, ReplyCode::PreconditionFailed);
    assert!(e.text.contains("inequivalent arg 'durable'"), "{}", e.text);
    let mut ttl = FieldTable::default();
    ttl.insert("x-message-ttl".into(), AMQPValue::LongInt(10));
    let e = v
        .declare_queue(&q("task_queue", &ttl), 2)
        .expect_err("args differ");
    assert_eq!(e.code, ReplyCode::PreconditionFailed);
}

#[test]
fn exclusive_queues_are_locked_to_their_connection() {
    let mut v = VHost::new("/");
    let none = FieldTable::default();
    let mut d = q("mine", &none);
    d.exclusive = true;
    v.declare_queue(&d, 1).expect("declare");
    let mut other = d.clone();
    other.owner = 2;
    assert_eq!(
        v.declare_queue(&other, 2).expect_err("locked").code,
        ReplyCode::ResourceLocked
    );
    assert_eq!(
        v.queue_for("mine", 2).expect_err("locked").code,
        ReplyCode::ResourceLocked
    );
    assert!(v.queue_for("mine", 1).is_ok());
    assert_eq!(v.exclusive_queues_of(1), vec![Name::from("mine")]);
}

#[test]
fn routes_each_exchange_type() {
    let mut v = VHost::new("/");
    let none = FieldTable::default();
    for name in ["a", "b", "c"] {
        v.declare_queue(&q(name, &none), name.as_bytes()[0] as u64)
            .expect("queue");
    }
    let (a, b, c) = (b'a' as u64, b'b' as u64, b'c' as u64);
    assert_eq!(route(&v, "", "a"), vec![a]);
    assert!(route(&v, "", "zz").is_empty());

    v.declare_exchange(&ex("direct_logs", "direct", &none))
        .expect("ex");
    for sev in ["info", "warning", "error"] {
        bind(&mut v, "a", "direct_logs", sev);
    }
    bind(&mut v, "b", "direct_logs", "error");
    assert_eq!(route(&v, "direct_logs", "info"), vec![a]);
    assert_eq!(route(&v, "direct_logs", "error"), vec![a, b]);
    assert!(route(&v, "direct_logs", "debug").is_empty());

    v.declare_exchange(&ex("logs", "fanout", &none))
        .expect("ex");
    bind(&mut v, "a", "logs", "");
    bind(&mut v, "c", "logs", "ignored");
    assert_eq!(route(&v, "logs", "anything"), vec![a, c]);

    v.declare_exchange(&ex("topic_logs", "topic", &none))
        .expect("ex");
    bind(&mut v, "a", "topic_logs", "*.critical");
    bind(&mut v, "b", "topic_logs", "kern.*");
    bind(&mut v, "c", "topic_logs", "#");
    assert_eq!(route(&v, "topic_logs", "kern.critical"), vec![a, b, c]);
    assert_eq!(route(&v, "topic_logs", "app.critical"), vec![a, c]);
    assert_eq!(route(&v, "topic_logs", "kern.info.x"), vec![c]);

    let mut hargs = FieldTable::default();
    hargs.insert("x-match".into(), AMQPValue::LongString("any".into()));
    hargs.insert("format".into(), AMQPValue::LongString("pdf".into()));
    v.bind(
        Binding {
            source: "amq.headers".into(),
            destination: "b".into(),
            kind: DestinationKind::Queue,
            routing_key: String::new(),
            arguments: hargs,
        },
        1,
    )
    .expect("bind");
    let mut headers = FieldTable::default();
    headers.insert("format".into(), AMQPValue::LongString("pdf".into()));
    let mut out = SmallVec::new();
    v.route("amq.headers", "", Some(&headers), &mut out)
        .expect("route");
    assert_eq!(out.as_slice(), &[b]);
}

#[test]
fn binding_errors() {
    let mut v = VHost::new("/");
    let none = FieldTable::default();
    v.declare_queue(&q("a", &none), 1).expect("queue");
    let b = |source: &str, dest: &str| Binding {
        source: source.into(),
        destination: dest.into(),
        kind: DestinationKind::Queue,
        routing_key: "k".into(),
        arguments: FieldTable::default(),
    };
    assert_eq!(
        v.bind(b("", "a"), 1).expect_err("default").code,
        ReplyCode::AccessRefused
    );
    assert_eq!(
        v.bind(b("nope", "a"), 1).expect_err("no ex").code,
        ReplyCode::NotFound
    );
    assert_eq!(
        v.bind(b("amq.direct", "nope"), 1).expect_err("no q").code,
        ReplyCode::NotFound
    );
    assert!(v.bind(b("amq.direct", "a"), 1).expect("bind"));
    assert!(!v.bind(b("amq.direct", "a"), 1).expect("idempotent"));
    assert_eq!(
        v.unbind(&b("amq.direct", "a"), 1)
            .expect("unbind")
            .bindings
            .len(),
        1
    );
    assert!(
        v.unbind(&b("amq.direct", "a"), 1)
            .expect("again")
            .bindings
            .is_empty()
    );
    // Unbinding from what is gone succeeds, as in RabbitMQ.
    for (x, q) in [("nope", "a"), ("amq.direct", "nope")] {
        let r = v.unbind(&b(x, q), 1).expect("unbind from what is gone");
        assert!(r.bindings.is_empty(), "{x} -> {q}");
    }
    let mut bad = b("amq.headers", "a");
    bad.arguments
        .insert("x-match".into(), AMQPValue::LongString("most".into()));
    assert_eq!(
        v.bind(bad, 1).expect_err("x-match").code,
        ReplyCode::PreconditionFailed
    );
}

#[test]
fn alternate_and_exchange_to_exchange() {
    let mut v = VHost::new("/");
    let none = FieldTable::default();
    v.declare_queue(&q("unrouted", &none), 7).expect("queue");
    v.declare_queue(&q("routed", &none), 8).expect("queue");
    v.declare_exchange(&ex("ae", "fanout", &none)).expect("ae");
    bind(&mut v, "unrouted", "ae", "");
    let mut args = FieldTable::default();
    args.insert(
        "alternate-exchange".into(),
        AMQPValue::LongString("ae".into()),
    );
    v.declare_exchange(&ex("main", "direct", &args))
        .expect("main");
    bind(&mut v, "routed", "main", "k");
    assert_eq!(route(&v, "main", "k"), vec![8]);
    assert_eq!(route(&v, "main", "other"), vec![7]);

    // main -> ae by an exchange binding, and a cycle back: no infinite loop.
    v.declare_exchange(&ex("src", "topic", &none)).expect("src");
    for (s, d) in [("src", "main"), ("main", "src")] {
        v.bind(
            Binding {
                source: s.into(),
                destination: d.into(),
                kind: DestinationKind::Exchange,
                routing_key: "#".into(),
                arguments: FieldTable::default(),
            },
            1,
        )
        .expect("e2e");
    }
    let mut got = route(&v, "src", "k");
    got.sort();
    assert_eq!(got, vec![8]);
}

#[test]
fn deletes_cascade() {
    let mut v = VHost::new("/");
    let none = FieldTable::default();
    v.declare_queue(&q("a", &none), 1).expect("queue");
    let mut auto = ex("auto", "direct", &none);
    auto.auto_delete = true;
    v.declare_exchange(&auto).expect("ex");
    bind(&mut v, "a", "auto", "k");
    assert_eq!(
        v.delete_exchange("auto", true).expect_err("in use").code,
        ReplyCode::PreconditionFailed
    );
    let (_, removed) = v.delete_queue("a").expect("delete");
    assert_eq!(removed.bindings.len(), 1);
    assert_eq!(
        removed.exchanges.len(),
        1,
        "auto-delete exchange went with its last binding"
    );
    assert!(v.exchange("auto").is_none());
    assert!(route(&v, "", "a").is_empty());
}

#[test]
fn an_internal_exchange_refuses_publishers_but_not_the_broker() {
    let mut v = VHost::new("/");
    let none = FieldTable::default();
    let internal = ExchangeDeclare {
        internal: true,
        ..ex("dlx", "fanout", &none)
    };
    v.declare_exchange(&internal).expect("declare");
    let id = v.declare_queue(&q("dead", &none), 1).expect("queue").0.id;
    bind(&mut v, "dead", "dlx", "");
    let mut out = SmallVec::new();
    let e = v
        .route("dlx", "k", None, &mut out)
        .expect_err("a publisher is refused");
    assert_eq!(e.code, ReplyCode::AccessRefused);
    assert!(out.is_empty());
    v.route_internal("dlx", "k", None, &mut out)
        .expect("dead-lettering routes");
    assert_eq!(out.to_vec(), vec![id]);
}
