//! Who may do what: users with their password hashes and tags, and their
//! permissions in each virtual host, as RabbitMQ's internal auth backend
//! keeps them, so definitions exported from RabbitMQ import unchanged.
//!
//! - [`password`]: salted SHA-256 (or SHA-512) password hashes, RabbitMQ's
//!   `rabbit_password_hashing_sha256` byte for byte.
//! - [`permissions`]: the configure, write and read regexps of a user in a
//!   vhost, and the check every operation makes, with RabbitMQ's 403 texts.
//!
//! Pure: the caller draws salts and keeps users and permissions in the
//! replicated metadata.

pub mod password;
pub mod permissions;

pub use password::{HashAlgorithm, PasswordHash};
pub use permissions::{Access, Permission, Resource};
