//! Settings whose values are more than a number or a string: the memory
//! watermark (a fraction or a size), sizes such as the WAL preallocated,
//! the default queue type, and the TOML forms they may take.

use super::{ConfigError, bad};

/// The type a queue declared without `x-queue-type` gets, when it may be
/// either (durable, not exclusive, not auto-delete, named by the client).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum QueueType {
    /// On one node, as RabbitMQ's default.
    #[default]
    Classic,
    /// Replicated through its own Raft group.
    Quorum,
}

impl QueueType {
    /// Parses `classic` or `quorum`.
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        match s.trim() {
            "classic" => Ok(Self::Classic),
            "quorum" => Ok(Self::Quorum),
            other => Err(bad(
                "default-queue-type",
                other,
                "expected classic or quorum",
            )),
        }
    }
}

/// A setting given as a flag's text or as a TOML number or string (a size,
/// a fraction): its text, for the setting's own parser.
pub fn number_or_text(
    setting: &'static str,
    flag: &Option<String>,
    file: Option<toml::Value>,
) -> Result<Option<String>, ConfigError> {
    Ok(match (flag, file) {
        (Some(s), _) => Some(s.clone()),
        (None, Some(toml::Value::String(s))) => Some(s),
        (None, Some(toml::Value::Float(f))) => Some(format!("{f:?}")),
        (None, Some(toml::Value::Integer(i))) => Some(i.to_string()),
        (None, Some(other)) => {
            return Err(bad(
                setting,
                other.to_string(),
                "expected a number or a string",
            ));
        }
        (None, None) => None,
    })
}

/// Parses a size: `512MiB`, `2GB`, `64k`, `1000000`.
pub fn parse_size(setting: &'static str, s: &str) -> Result<u64, ConfigError> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| bad(setting, s, "expected a size (512MiB, 2GB, 1000000)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "kib" | "k" => 1 << 10,
        "mb" => 1_000_000,
        "mib" | "m" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" | "g" => 1 << 30,
        other => return Err(bad(setting, s, format!("unknown size unit '{other}'"))),
    };
    Ok(n.saturating_mul(mult))
}

/// The memory limit for messages.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Watermark {
    /// A fraction of the machine's (or cgroup's) memory.
    Fraction(f64),
    /// An absolute number of bytes.
    Bytes(u64),
}

impl Watermark {
    /// Parses `0.4`, `512MiB`, `2GB`, `1000000`.
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        let s = s.trim();
        let bad = |why: String| bad("memory-high-watermark", s, why);
        if let Ok(f) = s.parse::<f64>()
            && s.contains('.')
        {
            if f > 0.0 && f <= 1.0 {
                return Ok(Self::Fraction(f));
            }
            return Err(bad(format!("a fraction must be in (0, 1], not {f}")));
        }
        parse_size("memory-high-watermark", s).map(Self::Bytes)
    }

    /// The limit in bytes, given the memory available to the process.
    pub fn bytes(self, total_memory: u64) -> u64 {
        match self {
            Self::Fraction(f) => (total_memory as f64 * f) as u64,
            Self::Bytes(b) => b,
        }
    }
}
