use warren_core::Message;
use warren_core::message::MessageFlags;

use super::*;
use crate::api::PublishBatch;

fn state() -> State {
    let (credit_tx, _) = mpsc::unbounded_channel();
    State::new(credit_tx, Mirrors::default())
}

/// Channels come and go for the life of the link: once a channel has
/// nothing in flight, the link forgets it.
#[test]
fn a_channel_with_nothing_in_flight_is_forgotten() {
    let mut st = state();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let key = ChannelKey { id: 9, channel: 1 };
    let msg = Message::new(
        "".into(),
        "q",
        &[0, 0],
        [&b"m"[..]],
        MessageFlags::default(),
    );
    let batch = PublishBatch {
        from: Some((1, tx)),
        items: vec![(msg.clone(), Some((key, 1))), (msg, Some((key, 2)))],
        budget: None,
    };
    let mut items = Vec::new();
    st.encode(7, QueueMsg::Publish(batch), &mut items);
    assert_eq!(items.len(), 2);
    assert_eq!(st.routes.len(), 1);
    let confirm = |seq| pb::ConfirmRef {
        channel: Some(channel_to(key)),
        seq,
    };
    let down = |seqs: Vec<u64>| pb::Down {
        items: vec![pb::DownItem {
            op: Some(pb::down_item::Op::Confirms(pb::Confirms {
                confirms: seqs.into_iter().map(confirm).collect(),
                ok: true,
            })),
        }],
    };
    st.receive(down(vec![1]), &mut Vec::new());
    assert_eq!(st.routes.len(), 1, "seq 2 is still in flight");
    st.receive(down(vec![2]), &mut Vec::new());
    assert!(st.routes.is_empty() && st.outstanding.is_empty());
    let mut acked = 0;
    while let Ok(ConnEvent::Accepted { confirms, ok }) = rx.try_recv() {
        assert!(ok);
        acked += confirms.len();
    }
    assert_eq!(acked, 2);
}

/// The home's flow reports reach the proxy's flow (which the channels that
/// publish through it pause on), and a broken link releases them.
#[test]
fn the_homes_flow_reports_set_the_proxys_flow() {
    let mut st = state();
    let flow = Arc::new(crate::api::QueueFlow::default());
    let other = Arc::new(crate::api::QueueFlow::default());
    st.mirrors.register(7, &flow);
    st.mirrors.register(8, &other);
    let report = |queue, busy| pb::Down {
        items: vec![pb::DownItem {
            op: Some(pb::down_item::Op::Busy(pb::QueueBusy { queue, busy })),
        }],
    };
    st.receive(report(7, true), &mut Vec::new());
    assert!(flow.busy() && !other.busy(), "only the queue named");
    st.receive(report(7, false), &mut Vec::new());
    assert!(!flow.busy());
    st.receive(report(7, true), &mut Vec::new());
    st.receive(report(99, true), &mut Vec::new());
    st.fail_all(2);
    assert!(!flow.busy(), "a broken link holds nobody back");
}
