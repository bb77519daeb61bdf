//! Headers exchange: message headers matched against binding arguments.
//!
//! Values are compared as RabbitMQ (Erlang `==`) does: an integer of any width
//! equals the same integer of another width, short and long strings with the same
//! bytes are equal, and a binding value of type void matches on the key alone.

use crate::{AMQPValue, AmqpError, FieldTable};

use super::{Target, Targets};

/// The `x-match` argument of a headers binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XMatch {
    /// Every non-`x-` argument must match (the default).
    All,
    /// At least one non-`x-` argument must match.
    Any,
    /// Every argument, `x-` ones included.
    AllWithX,
    /// At least one argument, `x-` ones included.
    AnyWithX,
}

impl XMatch {
    /// Reads `x-match` from binding arguments; a bad value is a 406 as in RabbitMQ.
    pub fn from_args(args: &FieldTable) -> Result<Self, AmqpError> {
        let Some(v) = args.inner().get("x-match") else {
            return Ok(Self::All);
        };
        let s = match v {
            AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
            AMQPValue::ShortString(s) => s.as_str().to_owned(),
            _ => String::new(),
        };
        match s.as_str() {
            "all" => Ok(Self::All),
            "any" => Ok(Self::Any),
            "all-with-x" => Ok(Self::AllWithX),
            "any-with-x" => Ok(Self::AnyWithX),
            _ => Err(AmqpError::precondition(format!(
                "Invalid x-match field value {v:?}; expected all, any, all-with-x, or any-with-x"
            ))),
        }
    }
}

#[derive(Debug)]
struct HeaderBinding {
    xmatch: XMatch,
    arguments: FieldTable,
    target: Target,
}

#[derive(Debug, Default)]
pub(crate) struct HeadersIndex {
    bindings: Vec<HeaderBinding>,
}

impl HeadersIndex {
    pub(crate) fn add(&mut self, args: &FieldTable, target: Target) {
        self.bindings.push(HeaderBinding {
            // Validated by the caller before the binding was accepted.
            xmatch: XMatch::from_args(args).unwrap_or(XMatch::All),
            arguments: args.clone(),
            target,
        });
    }

    pub(crate) fn remove(&mut self, args: &FieldTable, target: &Target) {
        if let Some(pos) = self
            .bindings
            .iter()
            .position(|b| &b.target == target && &b.arguments == args)
        {
            self.bindings.swap_remove(pos);
        }
    }

    pub(crate) fn route(&self, headers: Option<&FieldTable>, out: &mut Targets) {
        for b in &self.bindings {
            if matches(b.xmatch, &b.arguments, headers) {
                out.push(b.target.clone());
            }
        }
    }
}

fn matches(xmatch: XMatch, args: &FieldTable, headers: Option<&FieldTable>) -> bool {
    let with_x = matches!(xmatch, XMatch::AllWithX | XMatch::AnyWithX);
    let all = matches!(xmatch, XMatch::All | XMatch::AllWithX);
    let mut considered = args
        .inner()
        .iter()
        .filter(|(k, _)| k.as_str() != "x-match" && (with_x || !k.as_str().starts_with("x-")))
        .peekable();
    if considered.peek().is_none() {
        return all;
    }
    let one = |(k, v): (&amq_protocol_types::ShortString, &AMQPValue)| {
        headers
            .and_then(|h| h.inner().get(k.as_str()))
            .is_some_and(|hv| matches!(v, AMQPValue::Void) || loosely_equal(v, hv))
    };
    if all {
        considered.all(one)
    } else {
        considered.any(one)
    }
}

/// Two optional arguments are equivalent: both absent, or loosely equal. A
/// redeclare of an exchange or a queue compares its arguments this way.
pub(crate) fn equivalent_arg(a: Option<&AMQPValue>, b: Option<&AMQPValue>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => loosely_equal(a, b),
        _ => false,
    }
}

/// Erlang-style equality of two field values.
fn loosely_equal(a: &AMQPValue, b: &AMQPValue) -> bool {
    match (as_int(a), as_int(b)) {
        (Some(x), Some(y)) => return x == y,
        (Some(_), None) | (None, Some(_)) => {
            return match (as_float(a), as_float(b)) {
                (Some(x), Some(y)) => x == y,
                _ => false,
            };
        }
        (None, None) => {}
    }
    match (as_bytes(a), as_bytes(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn as_int(v: &AMQPValue) -> Option<i128> {
    Some(match *v {
        AMQPValue::ShortShortInt(i) => i as i128,
        AMQPValue::ShortShortUInt(i) => i as i128,
        AMQPValue::ShortInt(i) => i as i128,
        AMQPValue::ShortUInt(i) => i as i128,
        AMQPValue::LongInt(i) => i as i128,
        AMQPValue::LongUInt(i) => i as i128,
        AMQPValue::LongLongInt(i) => i as i128,
        AMQPValue::Timestamp(i) => i as i128,
        _ => return None,
    })
}

fn as_float(v: &AMQPValue) -> Option<f64> {
    match *v {
        AMQPValue::Float(f) => Some(f as f64),
        AMQPValue::Double(f) => Some(f),
        _ => as_int(v).map(|i| i as f64),
    }
}

fn as_bytes(v: &AMQPValue) -> Option<&[u8]> {
    match v {
        AMQPValue::LongString(s) => Some(s.as_bytes()),
        AMQPValue::ShortString(s) => Some(s.as_str().as_bytes()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert((*k).into(), v.clone());
        }
        t
    }

    fn s(v: &str) -> AMQPValue {
        AMQPValue::LongString(v.into())
    }

    #[test]
    fn all_and_any() {
        let args = table(&[
            ("x-match", s("all")),
            ("a", s("1")),
            ("b", AMQPValue::LongInt(2)),
        ]);
        let hit = table(&[
            ("a", s("1")),
            ("b", AMQPValue::ShortShortUInt(2)),
            ("c", s("z")),
        ]);
        let miss = table(&[("a", s("1"))]);
        assert!(matches(XMatch::All, &args, Some(&hit)));
        assert!(!matches(XMatch::All, &args, Some(&miss)));
        assert!(matches(XMatch::Any, &args, Some(&miss)));
        assert!(!matches(XMatch::Any, &args, None));
        // The integer 1 is not the string "1" (RobustMQ's mistake).
        let wrong_type = table(&[("a", AMQPValue::LongInt(1)), ("b", AMQPValue::LongInt(2))]);
        assert!(!matches(XMatch::All, &args, Some(&wrong_type)));
    }

    #[test]
    fn x_keys_only_with_x() {
        let args = table(&[("x-k", s("v"))]);
        let hdr = table(&[("x-k", s("v"))]);
        assert!(
            matches(XMatch::All, &args, None),
            "no considered keys: all matches"
        );
        assert!(
            !matches(XMatch::Any, &args, Some(&hdr)),
            "no considered keys: any fails"
        );
        assert!(matches(XMatch::AllWithX, &args, Some(&hdr)));
        assert!(matches(XMatch::AnyWithX, &args, Some(&hdr)));
    }

    #[test]
    fn void_matches_presence_and_xmatch_validated() {
        let args = table(&[("a", AMQPValue::Void)]);
        assert!(matches(
            XMatch::All,
            &args,
            Some(&table(&[("a", s("anything"))]))
        ));
        assert!(XMatch::from_args(&table(&[("x-match", s("some"))])).is_err());
        assert_eq!(
            XMatch::from_args(&table(&[("x-match", s("any-with-x"))])),
            Ok(XMatch::AnyWithX)
        );
    }
}
