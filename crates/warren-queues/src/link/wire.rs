//! Conversions between the queue types and `proto/queues.proto`.

use warren_cluster::pb::queues as pb;
use warren_core::message::MessageFlags;
use warren_core::queue::ChannelKey;
use warren_core::{AmqpError, Message, ReplyCode};

/// A message for the wire (the body is shared, not copied).
pub fn message_to(m: &Message) -> pb::WireMessage {
    let (data, rk_len, props_len) = m.packed();
    let flags = m.flags();
    pb::WireMessage {
        exchange: m.exchange.to_string(),
        data: data.clone(),
        rk_len: rk_len.into(),
        props_len,
        persistent: flags.persistent,
        priority: flags.priority.into(),
        expires: flags.expires.map_or(0, std::num::NonZeroU64::get),
    }
}

/// A message from the wire; `None` if it is malformed.
pub fn message_from(w: pb::WireMessage) -> Option<Message> {
    Message::from_packed(
        w.exchange.into(),
        w.data,
        u8::try_from(w.rk_len).ok()?,
        w.props_len,
        MessageFlags {
            persistent: w.persistent,
            priority: u8::try_from(w.priority).ok()?,
            expires: std::num::NonZeroU64::new(w.expires),
        },
    )
}

/// A channel for the wire.
pub fn channel_to(k: ChannelKey) -> pb::ChannelRef {
    pb::ChannelRef {
        id: k.id,
        number: k.channel.into(),
    }
}

/// A channel from the wire.
pub fn channel_from(c: Option<pb::ChannelRef>) -> Option<ChannelKey> {
    let c = c?;
    Some(ChannelKey {
        id: c.id,
        channel: u16::try_from(c.number).ok()?,
    })
}

/// An error for the wire.
pub fn error_to(e: &AmqpError) -> pb::Error {
    pb::Error {
        code: u32::from(e.code.code()),
        text: e.text.clone(),
    }
}

/// An error from the wire.
pub fn error_from(e: pb::Error) -> AmqpError {
    let code = u16::try_from(e.code)
        .ok()
        .and_then(ReplyCode::from_code)
        .unwrap_or(ReplyCode::InternalError);
    AmqpError::new(code, e.text)
}

/// Payload bytes above which a frame of a link is closed and the next one
/// started: frames stay far below the gRPC decode limit (256 MiB) however
/// large the messages, and one large message never waits behind hundreds.
pub const FRAME_BYTES: usize = 4 << 20;

/// Cuts `items` into frames of at most [`FRAME_BYTES`] payload (an item
/// larger than that gets a frame of its own), keeping their order.
pub fn frames<T>(items: Vec<T>, bytes: impl Fn(&T) -> usize) -> Vec<Vec<T>> {
    let mut frames = Vec::new();
    let mut frame = Vec::new();
    let mut size = 0;
    for item in items {
        let n = bytes(&item);
        if !frame.is_empty() && size + n > FRAME_BYTES {
            frames.push(std::mem::take(&mut frame));
            size = 0;
        }
        size += n;
        frame.push(item);
    }
    if !frame.is_empty() {
        frames.push(frame);
    }
    frames
}

/// Payload bytes of an `Up` item (its message, for a publish).
pub fn up_bytes(item: &pb::UpItem) -> usize {
    match &item.op {
        Some(pb::up_item::Op::Publish(p)) => p.message.as_ref().map_or(0, |m| m.data.len()),
        _ => 0,
    }
}

/// Payload bytes of a `Down` item (its message, for a delivery or a get).
pub fn down_bytes(item: &pb::DownItem) -> usize {
    match &item.op {
        Some(pb::down_item::Op::Deliver(d)) => d.message.as_ref().map_or(0, |m| m.data.len()),
        Some(pb::down_item::Op::Reply(pb::Reply {
            result: Some(pb::reply::Result::Entry(e)),
            ..
        })) => e.message.as_ref().map_or(0, |m| m.data.len()),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_cut_by_bytes_in_order() {
        let sizes = [1usize << 20, 3 << 20, 1 << 20, 10 << 20, 1];
        let frames = frames(sizes.to_vec(), |n| *n);
        assert_eq!(
            frames,
            vec![
                vec![1 << 20, 3 << 20],
                vec![1 << 20],
                vec![10 << 20],
                vec![1]
            ]
        );
    }
}
