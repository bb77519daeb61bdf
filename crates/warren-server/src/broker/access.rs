//! Who may log in and what they may do, against the users and permissions
//! group 0 replicates ([`warren_core::meta::AccessState`]).
//!
//! Until a config file's users were seeded into group 0 (the first start of
//! a cluster, or of a node upgraded from a version without replicated
//! users), a node logs in its config file's users and grants them
//! everything, which is what it did before users were replicated. The seed
//! is proposed once at start ([`Broker::seed_users`]); the first one
//! committed stays, as RabbitMQ creates its default user on a blank node's
//! first start only.

use std::sync::PoisonError;

use warren_core::access::{Access, HashAlgorithm, PasswordHash, Permission, Resource};
use warren_core::meta::{Command, LoginRefused, MetaState, PermissionEntry, UserDef};
use warren_core::{AmqpError, ReplyCode};

use super::{Broker, DEFAULT_VHOST, View};

/// The tag RabbitMQ gives its default user; config file users get it too.
const ADMIN_TAG: &str = "administrator";

/// Why a connection must close: its vhost or its user was deleted.
pub fn gone_reason(broker: &Broker, vhost: &str, user: &str) -> Option<AmqpError> {
    let meta = broker.meta();
    let why = if meta.vhost(vhost).is_none() {
        format!("vhost '{vhost}' is deleted")
    } else if meta.access().seeded() && meta.access().user(user).is_none() {
        format!("user '{user}' is deleted")
    } else {
        return None;
    };
    Some(AmqpError::new(ReplyCode::ConnectionForced, why))
}

impl Broker {
    /// Where connections learn that vhosts or users changed (see
    /// [`gone_reason`]).
    pub fn access_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.access_seen.subscribe()
    }

    /// After an applied metadata entry: tells connections when the set of
    /// vhosts or users changed (a fingerprint of their names, so other
    /// entries, queue declarations among them, wake nobody).
    pub(super) fn note_access(&self) {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        {
            let meta = self.meta();
            for v in meta.vhost_names() {
                v.hash(&mut h);
            }
            meta.access().seeded().hash(&mut h);
            for u in meta.access().users() {
                u.name.hash(&mut h);
            }
        }
        let seen = h.finish();
        self.access_seen.send_if_modified(|old| {
            let changed = *old != seen;
            *old = seen;
            changed
        });
    }

    /// A password login: the user exists and the password matches (group
    /// 0's users once seeded, the config file's before). The error says
    /// why, for the log only.
    pub fn login(&self, user: &str, password: &str) -> Result<(), &'static str> {
        let seeded = {
            let meta = self.meta();
            let access = meta.access();
            if access.seeded() {
                match access.login(user, password) {
                    Ok(()) => true,
                    Err(LoginRefused::InvalidCredentials) => return Err("invalid credentials"),
                    Err(LoginRefused::NoPassword) => return Err("the user has no password"),
                }
            } else {
                false
            }
        };
        if !seeded
            && !self
                .config
                .users
                .iter()
                .any(|u| u.name == user && u.password == password)
        {
            return Err("invalid credentials");
        }
        Ok(())
    }

    /// `connection.open`: the vhost exists and the user has permissions in
    /// it (530 otherwise, RabbitMQ's texts).
    pub fn open_vhost(&self, vhost: &str, user: &str) -> Result<(), AmqpError> {
        let meta = self.meta();
        if meta.vhost(vhost).is_none() {
            return Err(super::no_vhost(vhost));
        }
        if meta.access().seeded() {
            meta.access().check_vhost(vhost, user)?;
        }
        Ok(())
    }

    /// An operation's permission check in `vhost` (403 with RabbitMQ's
    /// text).
    pub fn check(
        &self,
        vhost: &str,
        user: &str,
        access: Access,
        resource: Resource<'_>,
    ) -> Result<(), AmqpError> {
        check(&self.meta(), vhost, user, access, resource)
    }

    /// Proposes the config file's users (each with every permission in
    /// `/`), unless group 0 already holds a seed.
    pub(super) async fn seed_users(&self) -> Result<(), AmqpError> {
        if self.meta().access().seeded() {
            return Ok(());
        }
        let users: Vec<UserDef> = self
            .config
            .users
            .iter()
            .map(|u| UserDef {
                name: u.name.as_str().into(),
                password: Some(PasswordHash::new(
                    HashAlgorithm::Sha256,
                    rand::random(),
                    &u.password,
                )),
                tags: vec![ADMIN_TAG.to_owned()],
            })
            .collect();
        let permissions = users
            .iter()
            .map(|u| PermissionEntry {
                vhost: DEFAULT_VHOST.into(),
                user: u.name.clone(),
                permission: Permission::all(),
            })
            .collect();
        self.node
            .propose(Command::SeedUsers { users, permissions })
            .await?;
        Ok(())
    }

    fn meta(&self) -> std::sync::RwLockReadGuard<'_, MetaState> {
        self.node
            .meta()
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl View<'_> {
    /// [`Broker::check`] under the read lock routing already holds.
    pub fn check(
        &self,
        vhost: &str,
        user: &str,
        access: Access,
        resource: Resource<'_>,
    ) -> Result<(), AmqpError> {
        check(&self.meta, vhost, user, access, resource)
    }
}

/// Before the seed is applied every logged-in user is one of the config
/// file's, which have every permission.
fn check(
    meta: &MetaState,
    vhost: &str,
    user: &str,
    access: Access,
    resource: Resource<'_>,
) -> Result<(), AmqpError> {
    let a = meta.access();
    if !a.seeded() {
        return Ok(());
    }
    a.check(vhost, user, access, resource)
}
