use warren_core::message::MessageFlags;

use super::*;
use crate::Store;

fn msg(body: &str) -> Message {
    Message::new(
        "".into(),
        "q",
        &[0, 0],
        [body.as_bytes()],
        MessageFlags {
            persistent: true,
            priority: 0,
            expires: None,
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = Store::open(dir.path()).expect("open");
        let w = store.start_writer();
        // Many concurrent durable writes: fewer syncs than writes.
        let mut waits = vec![];
        for i in 0..200u64 {
            let (tx, rx) = oneshot::channel();
            w.submit(
                vec![Op::PutMessage {
                    queue: 7,
                    seq: i + 1,
                    msg: msg(&format!("m{i}")),
                }],
                true,
                Some(Box::new(move |r| {
                    let _ = tx.send(r);
                })),
            )
            .await
            .expect("submit");
            waits.push(rx);
        }
        for rx in waits {
            rx.await.expect("done").expect("ok");
        }
        w.write_sync(vec![Op::DeleteMessage { queue: 7, seq: 1 }])
            .await
            .expect("delete");
        let syncs = w.stats().syncs.load(Ordering::Relaxed);
        assert!(syncs <= 201, "at most one sync per request: {syncs}");
        w.close().await.expect("close");
        assert!(
            w.write_sync(vec![]).await.is_err(),
            "closed writer refuses work"
        );
        drop(store);
    }
    let store = Store::open(dir.path()).expect("reopen");
    let mut seen = vec![];
    store
        .for_each_message(7, |seq, m| seen.push((seq, m.body().to_vec())))
        .expect("scan");
    assert_eq!(seen.len(), 199);
    assert_eq!(seen[0], (2, b"m1".to_vec()));
    assert_eq!(
        store.for_each_message(8, |_, _| {}).expect("scan").messages,
        0
    );
    assert_eq!(store.last_message_seq(7).expect("last"), Some(200));
    assert_eq!(store.last_message_seq(8).expect("last"), None);
    let w = store.start_writer();
    w.write_sync(vec![Op::DeleteQueue(7)])
        .await
        .expect("range delete");
    assert_eq!(
        store.for_each_message(7, |_, _| {}).expect("scan").messages,
        0
    );
    w.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_writes_never_overtake_submitted_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let w = store.start_writer();
    let put = |seq| Op::PutMessage {
        queue: 3,
        seq,
        msg: msg("x"),
    };
    let mut inline = 0;
    for i in 0..300u64 {
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        w.submit(
            vec![put(2 * i + 1)],
            i % 2 == 0,
            Some(Box::new(move |r| {
                assert!(r.is_ok());
                d.store(true, Ordering::Release);
            })),
        )
        .await
        .expect("submit");
        if i % 3 == 0 {
            // Sometimes let the writer finish first.
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        // Inline only once the earlier request has completed.
        match w.write_now(3, vec![put(2 * i + 2)], true) {
            Ok(r) => {
                r.expect("inline write");
                assert!(
                    done.load(Ordering::Acquire),
                    "inline write {i} overtook a submitted one"
                );
                inline += 1;
            }
            Err(ops) => {
                assert_eq!(ops.len(), 1, "a busy writer hands the ops back");
                w.write_sync(ops).await.expect("queued write");
            }
        }
    }
    assert_eq!(w.stats().inline.load(Ordering::Relaxed), inline);
    assert_eq!(
        store.for_each_message(3, |_, _| {}).expect("scan").messages,
        600
    );
    // Idle, same caller: the write happens here (once the writer thread
    // has finished its bookkeeping, a moment on a loaded machine).
    let mut ops = vec![put(601)];
    for _ in 0..10_000 {
        match w.write_now(3, ops, true) {
            Ok(r) => {
                r.expect("inline write");
                ops = vec![];
                break;
            }
            Err(back) => ops = back,
        }
        std::thread::sleep(std::time::Duration::from_micros(100));
    }
    assert!(ops.is_empty(), "the writer never went idle");
    // Another caller in between: its first write queues, the next one is
    // inline again (the writer being idle).
    assert!(w.write_now(4, vec![], false).is_err());
    assert!(w.write_now(4, vec![], false).is_ok());
    assert!(w.write_now(3, vec![], false).is_err());
    w.close().await.expect("close");
    assert!(
        w.write_now(3, vec![], true).is_err(),
        "a closed writer writes nothing inline"
    );
}
