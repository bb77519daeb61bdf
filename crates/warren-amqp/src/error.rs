//! Framing errors. Each maps to the connection-level reply code RabbitMQ uses;
//! the server turns them into `connection.close` without touching other connections.

/// A malformed or unexpected frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Frame type octet not 1, 2, 3 or 8.
    #[error("unknown frame type {0}")]
    UnknownType(u8),
    /// Payload larger than the negotiated `frame_max` allows.
    #[error("frame size {size} > negotiated frame_max {max}")]
    TooLarge {
        /// Announced frame size including overhead.
        size: u64,
        /// Negotiated limit.
        max: u32,
    },
    /// The octet after the payload is not 0xCE.
    #[error("frame end octet missing")]
    BadFrameEnd,
    /// A method frame whose class/method ids are not in the 0-9-1 spec.
    #[error("unknown method {class}.{method}")]
    UnknownMethod {
        /// class id
        class: u16,
        /// method id
        method: u16,
    },
    /// A known method whose arguments do not parse.
    #[error("malformed arguments for method {class}.{method}")]
    Syntax {
        /// class id
        class: u16,
        /// method id
        method: u16,
    },
    /// A content header that does not parse.
    #[error("malformed content header")]
    BadHeader,
    /// A heartbeat on a channel other than 0.
    #[error("heartbeat on channel {0}")]
    BadHeartbeat(u16),
    /// Content frames out of order, or a method where content was expected.
    #[error("{0}")]
    Unexpected(String),
    /// Content body larger than announced or than allowed.
    #[error("{0}")]
    BadContent(String),
    /// The socket failed (tokio-util's `Decoder` contract needs this variant).
    #[error("i/o: {0}")]
    Io(String),
}

impl From<std::io::Error> for FrameError {
    fn from(e: std::io::Error) -> Self {
        FrameError::Io(e.to_string())
    }
}

impl FrameError {
    /// The AMQP reply code for `connection.close`.
    pub fn reply_code(&self) -> u16 {
        match self {
            FrameError::UnknownType(_)
            | FrameError::TooLarge { .. }
            | FrameError::BadFrameEnd
            | FrameError::BadHeader
            | FrameError::BadHeartbeat(_)
            | FrameError::BadContent(_) => 501,
            FrameError::Syntax { .. } => 502,
            FrameError::Unexpected(_) => 505,
            FrameError::UnknownMethod { .. } => 540,
            FrameError::Io(_) => 541,
        }
    }

    /// The reply-code name RabbitMQ puts before the text.
    pub fn reply_name(&self) -> &'static str {
        match self.reply_code() {
            501 => "FRAME_ERROR",
            502 => "SYNTAX_ERROR",
            505 => "UNEXPECTED_FRAME",
            541 => "INTERNAL_ERROR",
            _ => "NOT_IMPLEMENTED",
        }
    }
}
