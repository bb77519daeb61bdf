//! Message expiry: a queue's `x-message-ttl` and a message's own
//! `expiration` property, as RabbitMQ has them.
//!
//! A message gets a deadline (Unix milliseconds) when it is published (its
//! `expiration`) and, lowered to the earlier of the two, when a queue with
//! a TTL enqueues it. Expiry happens at the head: a message is checked when
//! it is about to be delivered or fetched and when it reaches the head of
//! the queue, so an expired message is never delivered, while one behind a
//! longer-lived head waits there (RabbitMQ's per-message TTL works the same
//! way). The clock is the runtime's: this module only compares.

use crate::AmqpError;

/// The largest TTL RabbitMQ accepts (its `MAX_EXPIRY_TIMER`), milliseconds.
pub const MAX_TTL: u64 = 4_294_967_295;

/// The TTL in milliseconds an `expiration` property asks for, checked as
/// RabbitMQ's `rabbit_basic:parse_expiration` does (a decimal integer with an
/// optional sign, nothing after it, 0 to [`MAX_TTL`]); an invalid one is a
/// 406 with RabbitMQ's text.
pub fn parse_expiration(s: &str) -> Result<u64, AmqpError> {
    let invalid = |why: String| AmqpError::precondition(format!("invalid expiration '{s}': {why}"));
    let (negative, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let end = digits
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    if end == 0 {
        return Err(invalid("no_integer".into()));
    }
    let (number, rest) = digits.split_at(end);
    if !rest.is_empty() {
        return Err(invalid(format!("{{leftover_string,{rest:?}}}")));
    }
    let shown = number.trim_start_matches('0');
    let shown = if shown.is_empty() { "0" } else { shown };
    if negative && shown != "0" {
        return Err(invalid(format!("{{value_negative,-{shown}}}")));
    }
    match shown.parse::<u64>() {
        Ok(n) if n <= MAX_TTL => Ok(n),
        _ => Err(invalid(format!("{{value_too_large,{shown}}}"))),
    }
}

/// The deadline of a message published or enqueued at `now` with `ttl`.
pub fn deadline(now: u64, ttl: u64) -> u64 {
    now.saturating_add(ttl)
}

/// True when a message with deadline `expires` has expired at `now`. A TTL
/// of 0 has expired on arrival: it can only go to a consumer that takes it
/// at once, which the runtime decides before it looks at the clock.
pub fn expired(expires: Option<u64>, now: u64) -> bool {
    expires.is_some_and(|at| at <= now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ReplyCode;

    fn text(s: &str) -> String {
        let e = parse_expiration(s).expect_err(s);
        assert_eq!(e.code, ReplyCode::PreconditionFailed);
        e.text
    }

    #[test]
    fn parses_expiration_as_rabbitmq() {
        assert_eq!(parse_expiration("0").ok(), Some(0));
        assert_eq!(parse_expiration("60000").ok(), Some(60_000));
        assert_eq!(parse_expiration("+5").ok(), Some(5));
        assert_eq!(parse_expiration("4294967295").ok(), Some(MAX_TTL));
        assert_eq!(text("abc"), "invalid expiration 'abc': no_integer");
        assert_eq!(text(""), "invalid expiration '': no_integer");
        assert_eq!(
            text("12ms"),
            "invalid expiration '12ms': {leftover_string,\"ms\"}"
        );
        assert_eq!(text("-1"), "invalid expiration '-1': {value_negative,-1}");
        assert_eq!(
            text("4294967296"),
            "invalid expiration '4294967296': {value_too_large,4294967296}"
        );
        assert_eq!(
            text("99999999999999999999999"),
            "invalid expiration '99999999999999999999999': {value_too_large,99999999999999999999999}"
        );
    }

    #[test]
    fn expires_at_the_deadline() {
        assert!(!expired(None, u64::MAX));
        assert!(!expired(Some(10), 9));
        assert!(expired(Some(10), 10));
        assert_eq!(deadline(u64::MAX - 1, 5), u64::MAX);
    }
}
