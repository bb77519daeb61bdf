//! Bytes -> frames: check the header, then parse.
//!
//! The 7-octet header is read first and the announced size is compared with the
//! negotiated `frame_max` before anything is buffered, so a forged length can't
//! pin memory. Only a complete frame with its end octet is parsed, by
//! amq-protocol (`parse_class`, `parse_content_header`); an incomplete frame is
//! `Ok(None)`, the normal case of a read that stopped mid-frame.

use amq_protocol::frame::AMQPContentHeader;
use amq_protocol::frame::parsing::parse_content_header;
use amq_protocol::protocol::{AMQPClass, parse_class};
use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::Decoder;

use crate::{FRAME_OVERHEAD, FrameError, methods};

const FRAME_METHOD: u8 = 1;
const FRAME_HEADER: u8 = 2;
const FRAME_BODY: u8 = 3;
const FRAME_HEARTBEAT: u8 = 8;
const FRAME_END: u8 = 0xCE;
const HEADER_LEN: usize = 7;
/// How far past `frame_max` a frame may go: RabbitMQ's reader accepts a
/// payload of up to `frame_max` octets (the whole frame 8 over), because
/// clients differ on whether the limit counts the frame's overhead
/// (`?FRAME_SIZE_FUDGE` in `rabbit_reader`). We accept what it accepts, no more.
const FRAME_SIZE_FUDGE: u32 = FRAME_OVERHEAD;

/// A content header: the parsed properties plus their raw bytes.
#[derive(Clone, Debug)]
pub struct ContentHeader {
    /// Class id (60 for basic).
    pub class_id: u16,
    /// Announced body size.
    pub body_size: u64,
    /// Parsed properties (for routing, delivery mode, ...).
    pub properties: amq_protocol::protocol::BasicProperties,
    /// The property flags and list exactly as received, re-emitted on delivery.
    pub raw_properties: Bytes,
}

/// One incoming frame.
///
/// The header variant is large (parsed properties); boxing it would cost an
/// allocation per message, and frames only live for one move into the assembler.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Frame {
    /// A method frame.
    Method(u16, AMQPClass),
    /// A content header frame.
    Header(u16, ContentHeader),
    /// A content body frame; the payload shares the read buffer.
    Body(u16, Bytes),
    /// A heartbeat (always channel 0; other channels are an error).
    Heartbeat,
}

impl Frame {
    /// The channel the frame belongs to.
    pub fn channel(&self) -> u16 {
        match self {
            Frame::Method(c, _) | Frame::Header(c, _) | Frame::Body(c, _) => *c,
            Frame::Heartbeat => 0,
        }
    }
}

/// Decodes frames, enforcing a maximum frame size.
#[derive(Clone, Debug)]
pub struct FrameDecoder {
    frame_max: u32,
}

impl FrameDecoder {
    /// A decoder accepting frames up to `frame_max` octets (overhead included).
    pub fn new(frame_max: u32) -> Self {
        Self { frame_max }
    }

    /// Changes the limit, e.g. once tune-ok has been received.
    pub fn set_frame_max(&mut self, frame_max: u32) {
        self.frame_max = frame_max;
    }

    /// The current limit.
    pub fn frame_max(&self) -> u32 {
        self.frame_max
    }
}

impl Decoder for FrameDecoder {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if src.len() < HEADER_LEN {
            return Ok(None);
        }
        let kind = src[0];
        let channel = u16::from_be_bytes([src[1], src[2]]);
        let size = u32::from_be_bytes([src[3], src[4], src[5], src[6]]);
        if !matches!(
            kind,
            FRAME_METHOD | FRAME_HEADER | FRAME_BODY | FRAME_HEARTBEAT
        ) {
            return Err(FrameError::UnknownType(kind));
        }
        let total = u64::from(size) + u64::from(FRAME_OVERHEAD);
        if total > u64::from(self.frame_max) + u64::from(FRAME_SIZE_FUDGE) {
            return Err(FrameError::TooLarge {
                size: total,
                max: self.frame_max,
            });
        }
        let total = total as usize;
        if src.len() < total {
            src.reserve(total - src.len());
            return Ok(None);
        }
        if src[total - 1] != FRAME_END {
            return Err(FrameError::BadFrameEnd);
        }
        let mut frame = src.split_to(total);
        frame.advance(HEADER_LEN);
        frame.truncate(size as usize);
        let payload = frame.freeze();
        match kind {
            FRAME_METHOD => parse_method(channel, &payload).map(Some),
            FRAME_HEADER => parse_header(channel, payload).map(Some),
            FRAME_BODY => Ok(Some(Frame::Body(channel, payload))),
            _ if channel != 0 => Err(FrameError::BadHeartbeat(channel)),
            _ => Ok(Some(Frame::Heartbeat)),
        }
    }
}

fn parse_method(channel: u16, payload: &[u8]) -> Result<Frame, FrameError> {
    let (class, method) = match payload {
        [c0, c1, m0, m1, ..] => (
            u16::from_be_bytes([*c0, *c1]),
            u16::from_be_bytes([*m0, *m1]),
        ),
        _ => {
            return Err(FrameError::Syntax {
                class: 0,
                method: 0,
            });
        }
    };
    if !methods::is_known(class, method) {
        return Err(FrameError::UnknownMethod { class, method });
    }
    match parse_class(payload) {
        Ok(([], parsed)) => Ok(Frame::Method(channel, parsed)),
        _ => Err(FrameError::Syntax { class, method }),
    }
}

fn parse_header(channel: u16, payload: Bytes) -> Result<Frame, FrameError> {
    match parse_content_header(&payload[..]) {
        Ok((
            rest,
            AMQPContentHeader {
                class_id,
                body_size,
                properties,
            },
        )) if rest.is_empty() && payload.len() >= 12 => Ok(Frame::Header(
            channel,
            ContentHeader {
                class_id,
                body_size,
                properties,
                raw_properties: payload.slice(12..),
            },
        )),
        _ => Err(FrameError::BadHeader),
    }
}

#[cfg(test)]
mod tests {
    use amq_protocol::frame::{AMQPFrame, WriteContext, gen_frame};
    use amq_protocol::protocol::{basic, queue};

    use super::*;

    fn bytes_of(f: &AMQPFrame) -> Vec<u8> {
        gen_frame(f)(WriteContext::from(Vec::new()))
            .expect("gen")
            .write
    }

    #[test]
    fn parses_method_header_body_in_pieces() {
        let mut wire = bytes_of(&AMQPFrame::Method(
            3,
            AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                queue: "q".into(),
                ..Default::default()
            })),
        ));
        wire.extend(bytes_of(&AMQPFrame::Header(
            3,
            AMQPContentHeader {
                class_id: 60,
                body_size: 5,
                properties: basic::AMQPProperties::default().with_delivery_mode(2),
            },
        )));
        wire.extend(bytes_of(&AMQPFrame::Body(3, b"hello".to_vec())));
        let mut dec = FrameDecoder::new(131072);
        let mut buf = BytesMut::new();
        let mut frames = vec![];
        // Feed one byte at a time: every prefix must be "incomplete", never an error.
        for b in wire {
            buf.extend_from_slice(&[b]);
            while let Some(f) = dec.decode(&mut buf).expect("valid") {
                frames.push(f);
            }
        }
        assert_eq!(frames.len(), 3);
        assert!(
            matches!(&frames[0], Frame::Method(3, AMQPClass::Queue(queue::AMQPMethod::Declare(d))) if d.queue.as_str() == "q")
        );
        match &frames[1] {
            Frame::Header(3, h) => {
                assert_eq!(h.body_size, 5);
                assert_eq!(h.properties.delivery_mode(), &Some(2));
                assert_eq!(&h.raw_properties[..], &[0x10, 0x00, 2]);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(&frames[2], Frame::Body(3, b) if &b[..] == b"hello"));
    }

    #[test]
    fn rejects_bad_frames_with_rabbitmq_codes() {
        let mut dec = FrameDecoder::new(4096);
        let err = |bytes: &[u8], dec: &mut FrameDecoder| {
            dec.decode(&mut BytesMut::from(bytes))
                .expect_err("must fail")
                .reply_code()
        };
        // Oversized: rejected from the header alone. A payload of
        // `frame_max` (4096) octets is accepted, one more is not.
        assert_eq!(err(&[3, 0, 1, 0, 0, 0x10, 1], &mut dec), 501);
        let mut at_limit = BytesMut::from(&[3, 0, 1, 0, 0, 0x10, 0][..]);
        assert!(matches!(dec.decode(&mut at_limit), Ok(None)));
        assert_eq!(err(&[3, 0, 1, 0, 1, 0, 0], &mut dec), 501);
        assert_eq!(err(&[9, 0, 0, 0, 0, 0, 0, 0xCE], &mut dec), 501);
        assert_eq!(err(&[8, 0, 0, 0, 0, 0, 0, 0x00], &mut dec), 501);
        assert_eq!(err(&[8, 0, 1, 0, 0, 0, 0, 0xCE], &mut dec), 501);
        // class 60 method 99: unknown.
        assert_eq!(
            err(&[1, 0, 1, 0, 0, 0, 4, 0, 60, 0, 99, 0xCE], &mut dec),
            540
        );
        // queue.declare with truncated arguments.
        assert_eq!(
            err(&[1, 0, 1, 0, 0, 0, 5, 0, 50, 0, 10, 0, 0xCE], &mut dec),
            502
        );
        // header too short to parse.
        assert_eq!(err(&[2, 0, 1, 0, 0, 0, 2, 0, 60, 0xCE], &mut dec), 501);
    }
}
