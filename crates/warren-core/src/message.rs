//! A published message, packed for a long stay in memory.
//!
//! A queue may hold millions of messages, so a message is one shared buffer
//! (routing key, the content header's raw property bytes, body) plus a few scalars.
//! Properties stay in their wire encoding: a delivery re-emits them byte for byte,
//! so nothing is decoded or re-encoded per delivery, and a fanout to ten queues
//! shares the buffer instead of copying it.

use std::num::NonZeroU64;

use bytes::{BufMut, Bytes, BytesMut};

use crate::Name;

/// One message as published: where it came from, its properties and its body.
#[derive(Clone, Debug)]
pub struct Message {
    /// The exchange it was published to, repeated in `basic.deliver`.
    pub exchange: Name,
    /// `routing_key ++ raw properties ++ body`.
    data: Bytes,
    rk_len: u8,
    props_len: u32,
    /// `delivery_mode == 2`: written to disk when it lands in a durable queue.
    pub persistent: bool,
    /// The `priority` property (0 when absent).
    pub priority: u8,
    /// When it expires, in Unix milliseconds (see [`MessageFlags::expires`]).
    expires: Option<NonZeroU64>,
}

/// What a message needs besides its bytes; grouped so constructors stay readable.
#[derive(Clone, Copy, Debug, Default)]
pub struct MessageFlags {
    /// `delivery_mode == 2`.
    pub persistent: bool,
    /// The `priority` property.
    pub priority: u8,
    /// When it expires, in Unix milliseconds: the publish time plus its
    /// `expiration` property, lowered by a queue's `x-message-ttl` when it
    /// is enqueued. Kept with the message on disk, so a restart does not
    /// make it live longer.
    pub expires: Option<NonZeroU64>,
}

impl Message {
    /// Packs a message into one buffer. `body` may arrive in several frames.
    ///
    /// A routing key is a short string (at most 255 bytes); longer input is cut,
    /// which cannot happen for a key the codec accepted.
    pub fn new<'a>(
        exchange: Name,
        routing_key: &str,
        raw_properties: &[u8],
        body: impl IntoIterator<Item = &'a [u8]> + Clone,
        flags: MessageFlags,
    ) -> Self {
        let rk = &routing_key.as_bytes()[..routing_key.len().min(255)];
        let body_len: usize = body.clone().into_iter().map(<[u8]>::len).sum();
        let mut buf = BytesMut::with_capacity(rk.len() + raw_properties.len() + body_len);
        buf.put_slice(rk);
        buf.put_slice(raw_properties);
        for part in body {
            buf.put_slice(part);
        }
        Self {
            exchange,
            data: buf.freeze(),
            rk_len: rk.len() as u8,
            props_len: raw_properties.len() as u32,
            persistent: flags.persistent,
            priority: flags.priority,
            expires: flags.expires,
        }
    }

    /// Rebuilds a message from its packed form (see [`Message::packed`]).
    /// Returns `None` when the lengths do not fit the buffer.
    pub fn from_packed(
        exchange: Name,
        data: Bytes,
        rk_len: u8,
        props_len: u32,
        flags: MessageFlags,
    ) -> Option<Self> {
        let head = rk_len as usize + props_len as usize;
        if head > data.len() || std::str::from_utf8(&data[..rk_len as usize]).is_err() {
            return None;
        }
        Some(Self {
            exchange,
            data,
            rk_len,
            props_len,
            persistent: flags.persistent,
            priority: flags.priority,
            expires: flags.expires,
        })
    }

    /// The packed buffer and its two lengths, for storage.
    pub fn packed(&self) -> (&Bytes, u8, u32) {
        (&self.data, self.rk_len, self.props_len)
    }

    /// The flags the message was published with.
    pub fn flags(&self) -> MessageFlags {
        MessageFlags {
            persistent: self.persistent,
            priority: self.priority,
            expires: self.expires,
        }
    }

    /// When it expires (Unix milliseconds), if ever.
    pub fn expires(&self) -> Option<u64> {
        self.expires.map(NonZeroU64::get)
    }

    /// Makes it expire at `deadline` (Unix milliseconds) unless it already
    /// expires sooner: a queue's `x-message-ttl` and the message's own
    /// `expiration` both apply, and the earlier wins (as in RabbitMQ).
    pub fn expire_by(&mut self, deadline: u64) {
        let d = NonZeroU64::new(deadline.max(1));
        self.expires = match (self.expires, d) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    /// The routing key it was published with.
    pub fn routing_key(&self) -> &str {
        // Checked valid UTF-8 at construction (from a `&str`) or in `from_packed`.
        std::str::from_utf8(&self.data[..self.rk_len as usize]).unwrap_or_default()
    }

    /// The content header's property bytes (flags word and property list) as received.
    pub fn raw_properties(&self) -> &[u8] {
        let start = self.rk_len as usize;
        &self.data[start..start + self.props_len as usize]
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.data[self.rk_len as usize + self.props_len as usize..]
    }

    /// Bytes this message keeps alive, for memory accounting. Counts the buffer
    /// and a fixed overhead for the structures that hold it.
    pub fn memory_size(&self) -> usize {
        self.data.len() + MESSAGE_OVERHEAD
    }
}

/// Estimated bytes of bookkeeping per queued message (this struct, the queue
/// entry, the allocation header). Measured, not exact; used for the watermark.
pub const MESSAGE_OVERHEAD: usize = 96;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_and_unpacks() {
        let m = Message::new(
            "ex".into(),
            "a.b",
            &[0x10, 0x00, 2],
            [&b"hel"[..], &b"lo"[..]],
            MessageFlags {
                persistent: true,
                priority: 3,
                expires: None,
            },
        );
        assert_eq!(m.routing_key(), "a.b");
        assert_eq!(m.raw_properties(), &[0x10, 0x00, 2]);
        assert_eq!(m.body(), b"hello");
        let (data, rk, props) = m.packed();
        let back =
            Message::from_packed("ex".into(), data.clone(), rk, props, m.flags()).expect("valid");
        assert_eq!(back.body(), b"hello");
        assert!(back.persistent);
        let mut m = m;
        assert_eq!(m.expires(), None);
        m.expire_by(500);
        m.expire_by(900);
        assert_eq!(m.expires(), Some(500), "the earlier deadline wins");
        assert!(
            Message::from_packed("ex".into(), Bytes::from_static(b"ab"), 3, 0, m.flags()).is_none()
        );
    }
}
