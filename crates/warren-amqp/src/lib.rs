//! # warren-amqp: AMQP 0-9-1 framing on top of amq-protocol
//!
//! Parsing and generating methods is amq-protocol's job; this crate adds what a
//! server needs around it and nothing of the broker:
//!
//! - [`codec`]: [`codec::FrameDecoder`], a tokio-util `Decoder` that checks a
//!   frame's header (type, size against the negotiated `frame_max`, end octet)
//!   *before* buffering or parsing it, then lets amq-protocol parse the payload.
//!   Body frames are handed out as `Bytes` slices of the read buffer, uncopied.
//! - [`assembler`]: method + content header + body frames -> one command, with
//!   RabbitMQ's reply codes for out-of-order or oversized content.
//! - [`encode`]: writes outgoing frames into the connection's one write buffer;
//!   deliveries re-emit the publisher's raw property bytes without re-encoding.
//! - [`properties`]: adding a header to a message's raw properties (the
//!   `x-delivery-count` of redelivered quorum queue messages).
//! - [`error`]: [`FrameError`], each with the reply code RabbitMQ would send.
//!
//! The wire types stay here and in amq-protocol; the server converts them to
//! the domain's types (iggy's rule: the protocol is independent of the domain).

pub mod assembler;
pub mod codec;
pub mod encode;
pub mod error;
pub mod methods;
pub mod properties;

pub use amq_protocol;
pub use amq_protocol::protocol::{AMQPClass, BasicProperties};
pub use assembler::{Assembler, Content, Inbound};
pub use codec::{ContentHeader, Frame, FrameDecoder};
pub use error::FrameError;

/// The protocol header a 0-9-1 client sends first.
pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";

/// The smallest `frame_max` a peer may negotiate (AMQP 0-9-1 `frame-min-size`).
pub const FRAME_MIN_SIZE: u32 = 4096;

/// Bytes of a frame that are not payload: type, channel, size, end octet.
pub const FRAME_OVERHEAD: u32 = 8;
