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
