use warren_core::Message;
use warren_core::message::MessageFlags;

use super::*;
use crate::Op;

fn msg(i: u64) -> Message {
    Message::new(
        "".into(),
        "q",
        &[0, 0],
        [format!("m{i}").repeat(100).as_bytes()],
        MessageFlags {
            persistent: true,
            priority: 0,
            expires: None,
        },
    )
}

/// The seqs of queue 3 stored in `store`, in order.
fn stored(store: &Store) -> Vec<u64> {
    let mut seqs = Vec::new();
    let found = store
        .for_each_message(3, |seq, _| seqs.push(seq))
        .expect("scan");
    assert!(found.corrupt.is_empty(), "nothing corrupt: {found:?}");
    seqs
}

/// Copies the files of `from` into `to` as they are: what a crash would
/// leave of a database still open.
fn crash_image(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_file() {
            let name = path.file_name().expect("name");
            std::fs::copy(&path, to.join(name)).expect("copy");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_wal_is_reused_and_a_crash_recovers_what_it_synced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    assert!(
        !store.prepare_wal(0).expect("nothing"),
        "0 prepares nothing"
    );
    assert!(store.prepare_wal(4 << 20).expect("prepare"), "a reused WAL");
    let len = live_wal_len(dir.path()).expect("len");
    assert!(
        len >= 4 << 20,
        "the live WAL is the reused one: {len} bytes"
    );
    assert!(store.recover().expect("recover").queues.is_empty());

    let w = store.start_writer();
    for i in 1..=100 {
        let put = Op::PutMessage {
            queue: 3,
            seq: i,
            msg: msg(i),
        };
        w.write_sync(vec![put]).await.expect("put");
    }
    w.write_sync(vec![Op::DeleteMessage { queue: 3, seq: 1 }])
        .await
        .expect("delete");
    assert_eq!(
        live_wal_len(dir.path()).expect("len"),
        len,
        "101 synced writes overwrote the reused file, never grew it"
    );

    // What a crash leaves: the reused WAL holds the synced records, then
    // what is left of the filler. Only the records come back.
    let image = tempfile::tempdir().expect("tempdir");
    crash_image(dir.path(), image.path());
    let crashed = Store::open(image.path()).expect("open the image");
    assert_eq!(stored(&crashed), (2..=100).collect::<Vec<_>>());
    drop(crashed);

    // A clean restart prepares again over what the last run left.
    w.close().await.expect("close");
    drop(w);
    drop(store);
    let store = Store::open(dir.path()).expect("reopen");
    assert!(store.prepare_wal(4 << 20).expect("prepare again"));
    assert_eq!(stored(&store), (2..=100).collect::<Vec<_>>());
}
