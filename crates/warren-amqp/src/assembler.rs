//! Method + content header + body frames -> one command (rabbit_command_assembler).
//!
//! One assembler per channel. A method that carries content (`basic.publish`)
//! waits for its header and then for body frames until the announced size is
//! reached. Anything else in between is `UNEXPECTED_FRAME` (505); a body larger
//! than announced, or an announced size over the limit, is `FRAME_ERROR` (501).

use amq_protocol::protocol::{AMQPClass, basic};
use bytes::Bytes;

use crate::FrameError;
use crate::codec::{ContentHeader, Frame};

/// Body fragments; most messages fit one frame.
type Parts = Vec<Bytes>;

/// A complete publish: its method, header and body fragments.
#[derive(Clone, Debug)]
pub struct Content {
    /// The `basic.publish` method.
    pub method: basic::Publish,
    /// The content header.
    pub header: ContentHeader,
    /// Body fragments in order (shared slices of what was read).
    pub body: Vec<Bytes>,
}

/// What a client sent on a channel, assembled: a method, or a
/// `basic.publish` with its content. (Not to be confused with a replicated
/// metadata command, `warren_core::meta::Command`.)
#[derive(Clone, Debug)]
pub enum Inbound {
    /// A method without content.
    Method(AMQPClass),
    /// A method with its content.
    Content(Box<Content>),
}

// Boxing the body state would allocate per message; one per channel exists.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Default)]
enum State {
    #[default]
    Method,
    Header(basic::Publish),
    Body {
        method: basic::Publish,
        header: ContentHeader,
        remaining: u64,
        parts: Parts,
    },
}

/// Assembles the frames of one channel.
#[derive(Debug, Default)]
pub struct Assembler {
    state: State,
}

impl Assembler {
    /// True while a publish waits for its header or body.
    pub fn in_content(&self) -> bool {
        !matches!(self.state, State::Method)
    }

    /// Body bytes received of the publish being assembled (held in memory
    /// until it completes).
    pub fn received(&self) -> u64 {
        match &self.state {
            State::Body {
                header, remaining, ..
            } => header.body_size - remaining,
            _ => 0,
        }
    }

    /// Feeds one frame of this channel. `max_body` bounds the announced body size.
    pub fn feed(&mut self, frame: Frame, max_body: u64) -> Result<Option<Inbound>, FrameError> {
        match (std::mem::take(&mut self.state), frame) {
            (State::Method, Frame::Method(_, AMQPClass::Basic(basic::AMQPMethod::Publish(p)))) => {
                self.state = State::Header(p);
                Ok(None)
            }
            (State::Method, Frame::Method(_, m)) => Ok(Some(Inbound::Method(m))),
            (State::Method, _) => Err(FrameError::Unexpected(
                "expected method frame, got non method frame instead".into(),
            )),
            (State::Header(method), Frame::Header(_, header)) => {
                if header.class_id != 60 {
                    return Err(FrameError::Unexpected(format!(
                        "expected content header for class 60, got one for class {} instead",
                        header.class_id
                    )));
                }
                if header.body_size > max_body {
                    return Err(FrameError::BadContent(format!(
                        "content body size {} exceeds maximum allowed size {max_body}",
                        header.body_size
                    )));
                }
                if header.body_size == 0 {
                    return Ok(Some(Inbound::Content(Box::new(Content {
                        method,
                        header,
                        body: Vec::new(),
                    }))));
                }
                let remaining = header.body_size;
                self.state = State::Body {
                    method,
                    header,
                    remaining,
                    parts: Parts::new(),
                };
                Ok(None)
            }
            (State::Header(_), _) => Err(FrameError::Unexpected(
                "expected content header for class 60, got non content header frame instead".into(),
            )),
            (
                State::Body {
                    method,
                    header,
                    remaining,
                    mut parts,
                },
                Frame::Body(_, bytes),
            ) => {
                let len = bytes.len() as u64;
                if len > remaining {
                    return Err(FrameError::BadContent(
                        "content body frame exceeds remaining content size".into(),
                    ));
                }
                if !bytes.is_empty() {
                    parts.push(bytes);
                }
                if len == remaining {
                    Ok(Some(Inbound::Content(Box::new(Content {
                        method,
                        header,
                        body: parts,
                    }))))
                } else {
                    self.state = State::Body {
                        method,
                        header,
                        remaining: remaining - len,
                        parts,
                    };
                    Ok(None)
                }
            }
            (State::Body { .. }, _) => Err(FrameError::Unexpected(
                "expected content body, got non content body frame instead".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use amq_protocol::protocol::channel;

    use super::*;

    fn publish() -> Frame {
        Frame::Method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish::default())),
        )
    }

    fn header(size: u64) -> Frame {
        Frame::Header(
            1,
            ContentHeader {
                class_id: 60,
                body_size: size,
                properties: Default::default(),
                raw_properties: Bytes::from_static(&[0, 0]),
            },
        )
    }

    #[test]
    fn assembles_split_body() {
        let mut a = Assembler::default();
        assert!(a.feed(publish(), 100).expect("ok").is_none());
        assert!(a.feed(header(5), 100).expect("ok").is_none());
        assert!(
            a.feed(Frame::Body(1, Bytes::from_static(b"he")), 100)
                .expect("ok")
                .is_none()
        );
        match a
            .feed(Frame::Body(1, Bytes::from_static(b"llo")), 100)
            .expect("ok")
        {
            Some(Inbound::Content(c)) => assert_eq!(c.body.concat(), b"hello"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(!a.in_content());
        match a
            .feed(publish(), 100)
            .and_then(|_| a.feed(header(0), 100))
            .expect("ok")
        {
            Some(Inbound::Content(c)) => assert!(c.body.is_empty()),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn out_of_order_content_is_rejected() {
        let mut a = Assembler::default();
        assert_eq!(
            a.feed(header(1), 100).expect_err("no method").reply_code(),
            505
        );
        let mut a = Assembler::default();
        a.feed(publish(), 100).expect("ok");
        let close = Frame::Method(
            1,
            AMQPClass::Channel(channel::AMQPMethod::Close(Default::default())),
        );
        assert_eq!(
            a.feed(close, 100)
                .expect_err("method mid-content")
                .reply_code(),
            505
        );
        let mut a = Assembler::default();
        a.feed(publish(), 100).expect("ok");
        a.feed(header(2), 100).expect("ok");
        let e = a
            .feed(Frame::Body(1, Bytes::from_static(b"abc")), 100)
            .expect_err("too long");
        assert_eq!(e.reply_code(), 501);
        let mut a = Assembler::default();
        a.feed(publish(), 100).expect("ok");
        assert_eq!(
            a.feed(header(101), 100).expect_err("too big").reply_code(),
            501
        );
    }
}
