//! The domain's error: an AMQP reply code plus RabbitMQ-style text.

use crate::ReplyCode;

/// An error that becomes a `channel.close` or `connection.close` (see
/// [`ReplyCode::is_connection_level`]). The text is what follows the code name,
/// e.g. `no queue 'q' in vhost '/'`; [`AmqpError::reply_text`] adds the prefix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[error("{} - {text}", code.name())]
pub struct AmqpError {
    /// What kind of failure this is.
    pub code: ReplyCode,
    /// Human-readable detail, without the code name.
    pub text: String,
    /// Close only the channel even though the code is a connection-level
    /// one: a metadata store timeout (541) leaves the connection's other
    /// channels usable, which is kinder than RabbitMQ's connection close.
    #[serde(default)]
    pub channel_only: bool,
}

impl AmqpError {
    /// An error with the given code and detail text.
    pub fn new(code: ReplyCode, text: impl Into<String>) -> Self {
        Self {
            code,
            text: text.into(),
            channel_only: false,
        }
    }

    /// The same error, closing only the channel (see `channel_only`).
    pub fn on_channel(mut self) -> Self {
        self.channel_only = true;
        self
    }

    /// Whether the error closes the whole connection.
    pub fn is_connection_level(&self) -> bool {
        self.code.is_connection_level() && !self.channel_only
    }

    /// 404 `no <kind> '<name>' in vhost '<vhost>'`.
    pub fn not_found(kind: &str, name: &str, vhost: &str) -> Self {
        Self::new(
            ReplyCode::NotFound,
            format!("no {kind} '{name}' in vhost '{vhost}'"),
        )
    }

    /// 406 with the given text.
    pub fn precondition(text: impl Into<String>) -> Self {
        Self::new(ReplyCode::PreconditionFailed, text)
    }

    /// 403 with the given text.
    pub fn access_refused(text: impl Into<String>) -> Self {
        Self::new(ReplyCode::AccessRefused, text)
    }

    /// The reply text as RabbitMQ sends it: `CODE_NAME - detail`, cut to the
    /// 255 bytes a short string can hold.
    pub fn reply_text(&self) -> String {
        let mut s = format!("{} - {}", self.code.name(), self.text);
        if s.len() > 255 {
            let mut cut = 255;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            s.truncate(cut);
        }
        s
    }
}

/// Results of domain operations.
pub type Result<T> = std::result::Result<T, AmqpError>;
