//! Users and permissions, replicated through group 0 and managed with
//! `warren users` / `warren permissions`: a user without permissions in a
//! vhost cannot open it (530), and each operation is checked against the
//! configure, write and read expressions with RabbitMQ's 403 texts.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::BIN;
use lapin::options::{BasicGetOptions, QueuePurgeOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use warren_testkit::client::*;
use warren_testkit::{Cluster, Options, TEST_SECRET, wait_for_async};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs `warren ARGS --server <node's cluster address>` with the cluster's
/// secret, `stdin` on its standard input.
fn warren(c: &Cluster, node: u64, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .args(["--server", &c.node(node).cluster_addr()])
        .env("WARREN_CLUSTER_SECRET", TEST_SECRET)
        .env_remove("WARREN_CLUSTER_SECRET_FILE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("warren runs");
    if let Some(mut input) = child.stdin.take() {
        input
            .write_all(stdin.unwrap_or("").as_bytes())
            .expect("stdin");
    }
    child.wait_with_output().expect("warren ends")
}

/// [`warren`], which must succeed.
fn ok(c: &Cluster, node: u64, args: &[&str]) -> String {
    let out = warren(c, node, args, None);
    assert!(out.status.success(), "warren {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// [`warren`], which must fail saying `why`.
fn refused(c: &Cluster, args: &[&str], why: &str) {
    let out = warren(c, 1, args, None);
    assert!(!out.status.success(), "warren {args:?} succeeded: {out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(why), "warren {args:?}: {err}");
}

async fn connect_as(c: &Cluster, node: u64, user: &str, pass: &str) -> lapin::Result<Connection> {
    let uri = format!("amqp://{user}:{pass}@{}/%2f", c.amqp_addr(node).await);
    Connection::connect(&uri, ConnectionProperties::default()).await
}

/// `what` on a fresh channel of `conn` fails with a 403 saying `want`.
async fn denied<F, Fut, T>(conn: &Connection, want: &str, what: F)
where
    F: FnOnce(Channel) -> Fut,
    Fut: std::future::Future<Output = lapin::Result<T>>,
    T: std::fmt::Debug,
{
    let e = what(channel(conn).await).await.expect_err(want);
    assert_eq!(code(&e), Some(403), "{want}: {e:?}");
    assert!(text(&e).contains(want), "{:?} lacks {want}", text(&e));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_operation_is_checked_against_the_users_permissions() {
    let _serial = SERIAL.lock().await;
    let mut c = Cluster::start_all(BIN, &[1], Options::default());
    // guest, the config file's user, was seeded with every permission.
    let admin = c.connect(1).await;
    let ach = channel(&admin).await;
    ach.queue_declare("tasks".into(), durable(), FieldTable::default())
        .await
        .expect("declare tasks");
    declare_exchange(
        &ach,
        "logs",
        lapin::ExchangeKind::Fanout,
        Default::default(),
    )
    .await
    .expect("declare logs");
    publish(&ach, "", "tasks", b"job").await;
    let listed = ok(&c, 1, &["users", "list", "--json"]);
    assert!(
        listed.contains("\"guest\"") && listed.contains("administrator"),
        "{listed}"
    );

    // A new user: it logs in, but may not open `/` without permissions.
    ok(
        &c,
        1,
        &["users", "add", "bob", "s3cret", "--tags", "monitoring"],
    );
    let e = connect_as(&c, 1, "bob", "wrong")
        .await
        .expect_err("password");
    assert_eq!(code(&e), Some(403), "{e:?}");
    let e = connect_as(&c, 1, "bob", "s3cret")
        .await
        .expect_err("no vhost");
    assert_eq!(code(&e), Some(530), "{e:?}");
    assert!(
        text(&e).contains("access to vhost '/' refused for user 'bob'"),
        "{e:?}"
    );

    ok(
        &c,
        1,
        &["permissions", "add", "bob", "^bob-", "^bob-", "^bob-"],
    );
    let bob = connect_as(&c, 1, "bob", "s3cret")
        .await
        .expect("bob logs in");
    let bch = channel(&bob).await;
    bch.queue_declare("bob-q".into(), durable(), FieldTable::default())
        .await
        .expect("configure ^bob-");
    declare_exchange(
        &bch,
        "bob-x",
        lapin::ExchangeKind::Direct,
        Default::default(),
    )
    .await
    .expect("configure ^bob-");
    bind(&bch, "bob-q", "bob-x", "k")
        .await
        .expect("write bob-q, read bob-x");
    confirms(&bch).await;
    let confirm = publish_confirmed(&bch, "bob-x", "k", b"mine", BasicProperties::default()).await;
    assert!(confirm.is_ack(), "write ^bob-");
    // A passive declare needs no permission.
    passive(&bch, "tasks").await.expect("passive declare");

    let q = |n: &str| format!("access to queue '{n}' in vhost '/' refused for user 'bob'");
    let x = |n: &str| format!("access to exchange '{n}' in vhost '/' refused for user 'bob'");
    denied(
        &bob,
        &format!("configure {}", q("tasks")),
        |ch| async move {
            ch.queue_declare("tasks".into(), durable(), FieldTable::default())
                .await
        },
    )
    .await;
    denied(
        &bob,
        "configure access to queue 'amq.gen-",
        |ch| async move {
            ch.queue_declare("".into(), exclusive(), FieldTable::default())
                .await
        },
    )
    .await;
    denied(
        &bob,
        &format!("configure {}", x("audit")),
        |ch| async move {
            declare_exchange(&ch, "audit", lapin::ExchangeKind::Topic, Default::default()).await
        },
    )
    .await;
    denied(&bob, &format!("read {}", x("logs")), |ch| async move {
        bind(&ch, "bob-q", "logs", "").await
    })
    .await;
    denied(&bob, &format!("write {}", q("tasks")), |ch| async move {
        bind(&ch, "tasks", "bob-x", "k").await
    })
    .await;
    denied(
        &bob,
        &format!("write {}", x("amq.default")),
        |ch| async move {
            confirms(&ch).await;
            Err::<(), _>(refused_publish(&ch, "", "bob-q", b"x", BasicProperties::default()).await)
        },
    )
    .await;
    denied(&bob, &format!("read {}", q("tasks")), |ch| async move {
        consume_with(&ch, "tasks", "c", Default::default(), FieldTable::default()).await
    })
    .await;
    denied(&bob, &format!("read {}", q("tasks")), |ch| async move {
        ch.basic_get("tasks".into(), BasicGetOptions::default())
            .await
    })
    .await;
    denied(&bob, &format!("read {}", q("tasks")), |ch| async move {
        ch.queue_purge("tasks".into(), QueuePurgeOptions::default())
            .await
    })
    .await;
    denied(
        &bob,
        &format!("configure {}", q("tasks")),
        |ch| async move { ch.queue_delete("tasks".into(), Default::default()).await },
    )
    .await;
    // Nothing refused touched the queue.
    assert_eq!(count(&ach, "tasks").await, 1);

    // Wider permissions take effect at once, on the open connection.
    ok(&c, 1, &["permissions", "add", "bob", "", ".*", ".*"]);
    let bch = channel(&bob).await;
    let got = bch
        .basic_get("tasks".into(), BasicGetOptions { no_ack: true })
        .await
        .expect("read .*")
        .expect("a message");
    assert_eq!(got.delivery.data, b"job");
    let perms = ok(&c, 1, &["permissions", "list"]);
    assert!(perms.contains("/\tbob\t\t.*\t.*"), "{perms}");
    assert!(perms.contains("/\tguest\t.*\t.*\t.*"), "{perms}");

    // The CLI's refusals say why.
    refused(
        &c,
        &["users", "add", "bob", "again"],
        "user 'bob' already exists",
    );
    refused(
        &c,
        &["permissions", "add", "nobody", ".*", ".*", ".*"],
        "no user 'nobody'",
    );
    refused(
        &c,
        &["permissions", "add", "bob", "(", ".*", ".*"],
        "invalid regexp '('",
    );
    refused(
        &c,
        &[
            "permissions",
            "add",
            "bob",
            ".*",
            ".*",
            ".*",
            "--vhost",
            "nowhere",
        ],
        "no vhost 'nowhere'",
    );

    // A password from standard input; a cleared permission closes `/` again.
    let out = warren(&c, 1, &["users", "add", "carol"], Some("from-stdin\n"));
    assert!(out.status.success(), "{out:?}");
    ok(&c, 1, &["permissions", "add", "carol", ".*", ".*", ".*"]);
    connect_as(&c, 1, "carol", "from-stdin")
        .await
        .expect("carol logs in")
        .close(200, "bye".into())
        .await
        .expect("close");
    ok(&c, 1, &["permissions", "delete", "carol"]);
    let e = connect_as(&c, 1, "carol", "from-stdin")
        .await
        .expect_err("cleared");
    assert_eq!(code(&e), Some(530), "{e:?}");

    // A deleted user's open connection is closed at once (320, as
    // RabbitMQ; pika's test checks the text).
    ok(&c, 1, &["users", "delete", "bob"]);
    warren_testkit::wait_for("bob's connection closed by the broker", || {
        !bob.status().connected()
    })
    .await;
    let e = connect_as(&c, 1, "bob", "s3cret")
        .await
        .expect_err("deleted");
    assert_eq!(code(&e), Some(403), "{e:?}");

    // Users live in the metadata: a restart keeps them as they were made,
    // and the config file's seed is not applied again.
    ok(&c, 1, &["users", "delete", "guest"]);
    ok(&c, 1, &["permissions", "add", "carol", ".*", ".*", ".*"]);
    drop((admin, bob));
    assert!(c.terminate(1), "node 1 stops");
    c.restart(1);
    wait_for_async("carol to log in after the restart", || async {
        connect_as(&c, 1, "carol", "from-stdin").await.ok()
    })
    .await;
    let e = connect_as(&c, 1, "guest", "guest")
        .await
        .expect_err("guest deleted");
    assert_eq!(code(&e), Some(403), "{e:?}");
    let e = connect_as(&c, 1, "bob", "s3cret")
        .await
        .expect_err("bob deleted");
    assert_eq!(code(&e), Some(403), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_added_through_one_node_logs_in_on_the_others() {
    let _serial = SERIAL.lock().await;
    let c = Cluster::start_all(BIN, &[1, 2, 3], Options::default());
    c.wait_leader(&[1, 2, 3]).await;
    ok(&c, 2, &["users", "add", "dave", "pw"]);
    ok(&c, 2, &["permissions", "add", "dave", "^dave-", ".*", ".*"]);
    for node in [1, 3] {
        let conn = wait_for_async(&format!("dave to log in on node {node}"), || async {
            connect_as(&c, node, "dave", "pw").await.ok()
        })
        .await;
        let ch = channel(&conn).await;
        ch.queue_declare(
            format!("dave-{node}").as_str().into(),
            durable(),
            FieldTable::default(),
        )
        .await
        .expect("configure ^dave-");
        denied(
            &conn,
            "configure access to queue 'other'",
            |ch| async move {
                ch.queue_declare("other".into(), durable(), FieldTable::default())
                    .await
            },
        )
        .await;
    }
    let listed = ok(&c, 3, &["users", "list"]);
    assert!(
        listed.contains("dave") && listed.contains("guest"),
        "{listed}"
    );
}

/// The node's queues with messages on disk (the node is stopped).
fn stored_queues(c: &Cluster, id: u64) -> Vec<u64> {
    let store = warren_store::Store::open(&c.node(id).data_dir.join("rocksdb"))
        .expect("open the node's store");
    store.message_queue_ids().expect("list queues")
}

async fn connect_to(c: &Cluster, vhost: &str) -> lapin::Result<Connection> {
    let uri = format!("amqp://guest:guest@{}/{vhost}", c.amqp_addr(1).await);
    Connection::connect(&uri, ConnectionProperties::default()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vhost_is_its_own_namespace_and_its_delete_takes_its_messages() {
    let _serial = SERIAL.lock().await;
    let mut c = Cluster::start_all(BIN, &[1], Options::default());
    c.wait_leader(&[1]).await;
    ok(&c, 1, &["vhosts", "add", "prod"]);
    assert_eq!(ok(&c, 1, &["vhosts", "list"]), "/\nprod\n");
    refused(
        &c,
        &["vhosts", "add", "prod"],
        "vhost 'prod' already exists",
    );
    refused(&c, &["vhosts", "delete", "/"], "cannot be deleted");
    let e = connect_to(&c, "nowhere").await.expect_err("no such vhost");
    assert_eq!(code(&e), Some(530), "{e:?}");
    // guest has permissions in `/` only.
    let e = connect_to(&c, "prod").await.expect_err("no permissions");
    assert_eq!(code(&e), Some(530), "{e:?}");
    assert!(
        text(&e).contains("access to vhost 'prod' refused for user 'guest'"),
        "{e:?}"
    );
    ok(
        &c,
        1,
        &[
            "permissions",
            "add",
            "guest",
            ".*",
            ".*",
            ".*",
            "--vhost",
            "prod",
        ],
    );

    // The same names in two vhosts are two queues.
    let prod = connect_to(&c, "prod").await.expect("prod opens");
    let root = c.connect(1).await;
    let (pch, rch) = (channel(&prod).await, channel(&root).await);
    for ch in [&pch, &rch] {
        ch.queue_declare("orders".into(), durable(), FieldTable::default())
            .await
            .expect("declare orders");
        confirms(ch).await;
    }
    pch.queue_declare("prod-only".into(), durable(), FieldTable::default())
        .await
        .expect("declare prod-only");
    for body in [&b"a"[..], b"b", b"c"] {
        publish_confirmed(&pch, "", "orders", body, persistent()).await;
    }
    publish_confirmed(&rch, "", "orders", b"root", persistent()).await;
    assert_eq!(count(&pch, "orders").await, 3);
    assert_eq!(count(&rch, "orders").await, 1);
    let e = passive(&channel(&root).await, "prod-only")
        .await
        .expect_err("not in /");
    assert_eq!(code(&e), Some(404), "{e:?}");
    assert!(
        text(&e).contains("no queue 'prod-only' in vhost '/'"),
        "{e:?}"
    );
    drop((prod, root));
    assert!(c.terminate(1), "node 1 stops");
    assert_eq!(stored_queues(&c, 1).len(), 2, "both vhosts' orders on disk");

    // Deleting the vhost deletes its queues' messages from disk; `/` keeps
    // its own.
    c.restart(1);
    wait_for_async("node 1 to serve prod again", || async {
        connect_to(&c, "prod").await.ok()
    })
    .await;
    ok(&c, 1, &["vhosts", "delete", "prod"]);
    assert_eq!(ok(&c, 1, &["vhosts", "list"]), "/\n");
    let e = connect_to(&c, "prod").await.expect_err("deleted");
    assert_eq!(code(&e), Some(530), "{e:?}");
    assert!(!ok(&c, 1, &["permissions", "list"]).contains("prod"));
    let root = c.connect(1).await;
    assert_eq!(count(&channel(&root).await, "orders").await, 1);
    drop(root);
    assert!(c.terminate(1), "node 1 stops");
    assert_eq!(
        stored_queues(&c, 1).len(),
        1,
        "only /'s orders left on disk"
    );
}
