//! AMQP 0-9-1 reply codes as RabbitMQ uses them.
//!
//! Channel-level codes close only the channel; connection-level codes close the
//! whole connection. Keeping the two apart in one place (as LavinMQ does) means no
//! call site has to remember which is which.

/// A reply code of `channel.close` / `connection.close` / `basic.return`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ReplyCode {
    /// 200
    Success,
    /// 311: content too large (channel)
    ContentTooLarge,
    /// 312: unroutable mandatory message (basic.return)
    NoRoute,
    /// 313: no consumers for an immediate message (basic.return)
    NoConsumers,
    /// 320: connection forced, e.g. broker shutdown (connection)
    ConnectionForced,
    /// 402: invalid path (connection)
    InvalidPath,
    /// 403: access refused (channel)
    AccessRefused,
    /// 404: not found (channel)
    NotFound,
    /// 405: resource locked, e.g. another connection's exclusive queue (channel)
    ResourceLocked,
    /// 406: precondition failed (channel)
    PreconditionFailed,
    /// 501: frame error (connection)
    FrameError,
    /// 502: syntax error (connection)
    SyntaxError,
    /// 503: command invalid (connection)
    CommandInvalid,
    /// 504: channel error (connection)
    ChannelError,
    /// 505: unexpected frame (connection)
    UnexpectedFrame,
    /// 506: resource error (connection)
    ResourceError,
    /// 530: not allowed (connection)
    NotAllowed,
    /// 540: not implemented (connection)
    NotImplemented,
    /// 541: internal error (connection)
    InternalError,
}

impl ReplyCode {
    /// Every code, for lookups by number.
    pub const ALL: [ReplyCode; 19] = [
        ReplyCode::Success,
        ReplyCode::ContentTooLarge,
        ReplyCode::NoRoute,
        ReplyCode::NoConsumers,
        ReplyCode::ConnectionForced,
        ReplyCode::InvalidPath,
        ReplyCode::AccessRefused,
        ReplyCode::NotFound,
        ReplyCode::ResourceLocked,
        ReplyCode::PreconditionFailed,
        ReplyCode::FrameError,
        ReplyCode::SyntaxError,
        ReplyCode::CommandInvalid,
        ReplyCode::ChannelError,
        ReplyCode::UnexpectedFrame,
        ReplyCode::ResourceError,
        ReplyCode::NotAllowed,
        ReplyCode::NotImplemented,
        ReplyCode::InternalError,
    ];

    /// The code with this number, if it is one.
    pub fn from_code(n: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.code() == n)
    }

    /// The numeric code on the wire.
    pub fn code(self) -> u16 {
        match self {
            ReplyCode::Success => 200,
            ReplyCode::ContentTooLarge => 311,
            ReplyCode::NoRoute => 312,
            ReplyCode::NoConsumers => 313,
            ReplyCode::ConnectionForced => 320,
            ReplyCode::InvalidPath => 402,
            ReplyCode::AccessRefused => 403,
            ReplyCode::NotFound => 404,
            ReplyCode::ResourceLocked => 405,
            ReplyCode::PreconditionFailed => 406,
            ReplyCode::FrameError => 501,
            ReplyCode::SyntaxError => 502,
            ReplyCode::CommandInvalid => 503,
            ReplyCode::ChannelError => 504,
            ReplyCode::UnexpectedFrame => 505,
            ReplyCode::ResourceError => 506,
            ReplyCode::NotAllowed => 530,
            ReplyCode::NotImplemented => 540,
            ReplyCode::InternalError => 541,
        }
    }

    /// The name RabbitMQ puts at the start of the reply text.
    pub fn name(self) -> &'static str {
        match self {
            ReplyCode::Success => "OK",
            ReplyCode::ContentTooLarge => "CONTENT_TOO_LARGE",
            ReplyCode::NoRoute => "NO_ROUTE",
            ReplyCode::NoConsumers => "NO_CONSUMERS",
            ReplyCode::ConnectionForced => "CONNECTION_FORCED",
            ReplyCode::InvalidPath => "INVALID_PATH",
            ReplyCode::AccessRefused => "ACCESS_REFUSED",
            ReplyCode::NotFound => "NOT_FOUND",
            ReplyCode::ResourceLocked => "RESOURCE_LOCKED",
            ReplyCode::PreconditionFailed => "PRECONDITION_FAILED",
            ReplyCode::FrameError => "FRAME_ERROR",
            ReplyCode::SyntaxError => "SYNTAX_ERROR",
            ReplyCode::CommandInvalid => "COMMAND_INVALID",
            ReplyCode::ChannelError => "CHANNEL_ERROR",
            ReplyCode::UnexpectedFrame => "UNEXPECTED_FRAME",
            ReplyCode::ResourceError => "RESOURCE_ERROR",
            ReplyCode::NotAllowed => "NOT_ALLOWED",
            ReplyCode::NotImplemented => "NOT_IMPLEMENTED",
            ReplyCode::InternalError => "INTERNAL_ERROR",
        }
    }

    /// True when this code closes the connection rather than the channel.
    pub fn is_connection_level(self) -> bool {
        matches!(
            self,
            ReplyCode::ConnectionForced
                | ReplyCode::InvalidPath
                | ReplyCode::FrameError
                | ReplyCode::SyntaxError
                | ReplyCode::CommandInvalid
                | ReplyCode::ChannelError
                | ReplyCode::UnexpectedFrame
                | ReplyCode::ResourceError
                | ReplyCode::NotAllowed
                | ReplyCode::NotImplemented
                | ReplyCode::InternalError
        )
    }
}
