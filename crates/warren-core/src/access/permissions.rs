//! A user's permissions in a vhost: three regular expressions, checked
//! against the name of the exchange or queue an operation touches, as
//! RabbitMQ's `rabbit_auth_backend_internal:check_resource_access`:
//!
//! - configure: declare (not passive) and delete exchanges and queues;
//! - write: publish to an exchange, bind a queue or exchange (on the
//!   destination);
//! - read: consume, get and purge a queue, bind (on the source exchange).
//!
//! The match is a search (unanchored, as Erlang's `re:run`), an empty
//! expression matches nothing (RabbitMQ reads it as `^$`), and the default
//! exchange is checked as `amq.default`. A server-named queue is checked
//! under the name it gets (`amq.gen-...`), so `^amq\.gen-` grants those.

use regex::Regex;

use crate::AmqpError;

/// What an operation needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Create or delete.
    Configure,
    /// Publish to, or bind to.
    Write,
    /// Consume from, get from, purge, or bind from.
    Read,
}

impl Access {
    fn name(self) -> &'static str {
        match self {
            Self::Configure => "configure",
            Self::Write => "write",
            Self::Read => "read",
        }
    }
}

/// What an operation touches.
#[derive(Clone, Copy, Debug)]
pub enum Resource<'a> {
    /// An exchange (`""`: the default exchange).
    Exchange(&'a str),
    /// A queue.
    Queue(&'a str),
}

impl Resource<'_> {
    /// The kind and the name the expressions see.
    fn checked(&self) -> (&'static str, &str) {
        match *self {
            Resource::Exchange("") => ("exchange", "amq.default"),
            Resource::Exchange(name) => ("exchange", name),
            Resource::Queue(name) => ("queue", name),
        }
    }
}

/// One expression, kept with its source (what is stored and shown).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Pattern {
    source: String,
    /// `None`: matches everything (`.*`, checked without the engine).
    re: Option<Regex>,
}

impl Pattern {
    /// The expression `source`; an error says why it does not compile.
    pub fn new(source: &str) -> Result<Self, String> {
        let re = match source {
            ".*" => None,
            // RabbitMQ reads an empty expression as `^$`.
            "" => Some(Regex::new("^$").map_err(|e| e.to_string())?),
            s => Some(Regex::new(s).map_err(|e| format!("invalid regexp '{s}': {e}"))?),
        };
        Ok(Self {
            source: source.to_owned(),
            re,
        })
    }

    /// As it was given.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether `name` matches (anywhere, as a search).
    pub fn matches(&self, name: &str) -> bool {
        self.re.as_ref().is_none_or(|re| re.is_match(name))
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Pattern {}

impl TryFrom<String> for Pattern {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::new(&s)
    }
}

impl From<Pattern> for String {
    fn from(p: Pattern) -> String {
        p.source
    }
}

/// A user's permissions in one vhost.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Permission {
    /// Declare and delete.
    pub configure: Pattern,
    /// Publish and bind to.
    pub write: Pattern,
    /// Consume, get, purge and bind from.
    pub read: Pattern,
}

impl Permission {
    /// From the three expressions (`set_permissions`' order); an error
    /// names the one that does not compile.
    pub fn new(configure: &str, write: &str, read: &str) -> Result<Self, String> {
        Ok(Self {
            configure: Pattern::new(configure)?,
            write: Pattern::new(write)?,
            read: Pattern::new(read)?,
        })
    }

    /// Everything (`.* .* .*`), what the default user gets.
    pub fn all() -> Self {
        let any = || Pattern {
            source: ".*".to_owned(),
            re: None,
        };
        Self {
            configure: any(),
            write: any(),
            read: any(),
        }
    }

    /// Whether `access` to `resource` is granted.
    pub fn allows(&self, access: Access, resource: Resource<'_>) -> bool {
        let (_, name) = resource.checked();
        match access {
            Access::Configure => self.configure.matches(name),
            Access::Write => self.write.matches(name),
            Access::Read => self.read.matches(name),
        }
    }

    /// [`Permission::allows`], or the 403 RabbitMQ closes the channel with.
    pub fn check(
        &self,
        access: Access,
        resource: Resource<'_>,
        user: &str,
        vhost: &str,
    ) -> Result<(), AmqpError> {
        if self.allows(access, resource) {
            return Ok(());
        }
        Err(refused(access, resource, user, vhost))
    }
}

/// The 403 of a refused operation, in RabbitMQ's words.
pub fn refused(access: Access, resource: Resource<'_>, user: &str, vhost: &str) -> AmqpError {
    let (kind, name) = resource.checked();
    AmqpError::access_refused(format!(
        "{} access to {kind} '{name}' in vhost '{vhost}' refused for user '{user}'",
        access.name()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ReplyCode;

    #[test]
    fn each_access_reads_its_own_expression() {
        let p = Permission::new("^cfg-", "^out-", "^in-").expect("valid");
        assert!(p.allows(Access::Configure, Resource::Queue("cfg-q")));
        assert!(!p.allows(Access::Configure, Resource::Queue("out-q")));
        assert!(p.allows(Access::Write, Resource::Exchange("out-x")));
        assert!(!p.allows(Access::Write, Resource::Exchange("in-x")));
        assert!(p.allows(Access::Read, Resource::Queue("in-q")));
        assert!(!p.allows(Access::Read, Resource::Queue("cfg-q")));
    }

    #[test]
    fn a_match_is_a_search_and_an_empty_expression_matches_nothing() {
        let p = Permission::new("q", "", ".*").expect("valid");
        assert!(p.allows(Access::Configure, Resource::Queue("my-queue")));
        assert!(!p.allows(Access::Write, Resource::Exchange("anything")));
        assert!(!p.allows(Access::Write, Resource::Exchange("")));
        assert!(p.allows(Access::Read, Resource::Queue("")));
        assert!(p.allows(Access::Read, Resource::Queue("x")));
    }

    #[test]
    fn the_default_exchange_is_checked_as_amq_default() {
        let p = Permission::new("", "^amq\\.default$", "").expect("valid");
        assert!(p.allows(Access::Write, Resource::Exchange("")));
        assert!(!p.allows(Access::Write, Resource::Exchange("amq.direct")));
        let e = Permission::new("", "^x$", "")
            .expect("valid")
            .check(Access::Write, Resource::Exchange(""), "bob", "/")
            .expect_err("403");
        assert_eq!(e.code, ReplyCode::AccessRefused);
        assert_eq!(
            e.text,
            "write access to exchange 'amq.default' in vhost '/' refused for user 'bob'"
        );
    }

    #[test]
    fn server_named_queues_are_granted_by_their_prefix() {
        let p = Permission::new("^amq\\.gen-", ".*", "^amq\\.gen-").expect("valid");
        assert!(p.allows(Access::Configure, Resource::Queue("amq.gen-JzTY20BRgKO")));
        assert!(!p.allows(Access::Configure, Resource::Queue("tasks")));
        let e = p
            .check(Access::Read, Resource::Queue("tasks"), "worker", "prod")
            .expect_err("403");
        assert_eq!(
            e.text,
            "read access to queue 'tasks' in vhost 'prod' refused for user 'worker'"
        );
    }

    #[test]
    fn an_invalid_expression_is_refused_and_stored_ones_round_trip() {
        let e = Permission::new("(", ".*", ".*").expect_err("invalid");
        assert!(e.contains("invalid regexp '('"), "{e}");
        let p = Permission::new("^a", "", ".*").expect("valid");
        let json = serde_json::to_string(&p).expect("serialize");
        assert_eq!(json, r#"{"configure":"^a","write":"","read":".*"}"#);
        let back: Permission = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, p);
        assert!(!back.allows(Access::Write, Resource::Queue("x")));
        assert!(
            serde_json::from_str::<Permission>(r#"{"configure":"(","write":"","read":""}"#)
                .is_err()
        );
        assert_eq!(
            Permission::all(),
            Permission::new(".*", ".*", ".*").expect("valid")
        );
    }
}
