//! Users and their permissions as group 0 keeps them ([`AccessState`]): the
//! replicated half of [`crate::access`], which holds the pure checks.
//!
//! Every node logs users in and checks permissions against its own replica,
//! so a node cut off from the leader still serves the users it knew. The
//! maps are ordered (`BTreeMap`), so snapshots and listings are the same on
//! every node.
//!
//! The config file's users are seeded once ([`AccessState::seeded`]), as
//! RabbitMQ creates its default user on a blank node's first start only:
//! users changed or deleted afterwards stay as they were made, whatever a
//! node's config file says at its next start.

use std::collections::BTreeMap;

use crate::access::{Access, PasswordHash, Permission, Resource, permissions};
use crate::{AmqpError, Name, ReplyCode};

/// A user as the metadata keeps it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UserDef {
    /// Login name.
    pub name: Name,
    /// The password's hash; `None`: the user cannot log in with a password
    /// (RabbitMQ's `clear_password`).
    pub password: Option<PasswordHash>,
    /// Tags (`administrator`, `monitoring`...), kept for the management
    /// API and definitions; they grant nothing over AMQP.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// A user's permissions in one vhost, as a snapshot and a listing carry them.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PermissionEntry {
    /// The vhost.
    pub vhost: Name,
    /// The user.
    pub user: Name,
    /// What the user may configure, write and read there.
    pub permission: Permission,
}

/// Users and permissions.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AccessState {
    users: BTreeMap<Name, UserDef>,
    /// By vhost, then user.
    permissions: BTreeMap<Name, BTreeMap<Name, Permission>>,
    /// The first seed was applied: later ones change nothing.
    seeded: bool,
}

/// Why a login was refused (logged, never told to the client).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoginRefused {
    /// No such user, or the password does not match.
    InvalidCredentials,
    /// The user has no password (only another mechanism could log it in).
    NoPassword,
}

impl AccessState {
    /// Whether the users of a config file were seeded (before that, a node
    /// logs in its config file's users).
    pub fn seeded(&self) -> bool {
        self.seeded
    }

    /// A user by name.
    pub fn user(&self, name: &str) -> Option<&UserDef> {
        self.users.get(name)
    }

    /// Every user, by name.
    pub fn users(&self) -> impl Iterator<Item = &UserDef> {
        self.users.values()
    }

    /// Every permission, by vhost then user.
    pub fn permissions(&self) -> impl Iterator<Item = PermissionEntry> + '_ {
        self.permissions.iter().flat_map(|(vhost, users)| {
            users.iter().map(|(user, p)| PermissionEntry {
                vhost: vhost.clone(),
                user: user.clone(),
                permission: p.clone(),
            })
        })
    }

    /// `user`'s permissions in `vhost`, if it has any.
    pub fn permission(&self, vhost: &str, user: &str) -> Option<&Permission> {
        self.permissions.get(vhost)?.get(user)
    }

    /// Checks a password login (in constant time for a known user).
    pub fn login(&self, user: &str, password: &str) -> Result<(), LoginRefused> {
        let u = self
            .users
            .get(user)
            .ok_or(LoginRefused::InvalidCredentials)?;
        let hash = u.password.as_ref().ok_or(LoginRefused::NoPassword)?;
        if hash.verify(password) {
            Ok(())
        } else {
            Err(LoginRefused::InvalidCredentials)
        }
    }

    /// `connection.open`: a user with no permissions in a vhost may not
    /// open it (530, RabbitMQ's text).
    pub fn check_vhost(&self, vhost: &str, user: &str) -> Result<(), AmqpError> {
        if self.permission(vhost, user).is_some() {
            return Ok(());
        }
        Err(AmqpError::new(
            ReplyCode::NotAllowed,
            format!("access to vhost '{vhost}' refused for user '{user}'"),
        ))
    }

    /// An operation's check: 403 with RabbitMQ's text unless `user`'s
    /// permissions in `vhost` grant `access` to `resource`.
    pub fn check(
        &self,
        vhost: &str,
        user: &str,
        access: Access,
        resource: Resource<'_>,
    ) -> Result<(), AmqpError> {
        match self.permission(vhost, user) {
            Some(p) => p.check(access, resource, user, vhost),
            None => Err(permissions::refused(access, resource, user, vhost)),
        }
    }

    /// Adds a user; 406 if one has the name.
    pub(super) fn add_user(&mut self, user: &UserDef) -> Result<(), AmqpError> {
        if self.users.contains_key(&user.name) {
            return Err(AmqpError::precondition(format!(
                "user '{}' already exists",
                user.name
            )));
        }
        self.users.insert(user.name.clone(), user.clone());
        Ok(())
    }

    /// Deletes a user and its permissions in every vhost; 404 if none.
    pub(super) fn delete_user(&mut self, name: &str) -> Result<(), AmqpError> {
        if self.users.remove(name).is_none() {
            return Err(no_user(name));
        }
        for users in self.permissions.values_mut() {
            users.remove(name);
        }
        self.permissions.retain(|_, users| !users.is_empty());
        Ok(())
    }

    /// Sets (or replaces) `user`'s permissions in `vhost`, which the caller
    /// checked exists; 404 for an unknown user.
    pub(super) fn set_permission(
        &mut self,
        vhost: &Name,
        user: &Name,
        p: &Permission,
    ) -> Result<(), AmqpError> {
        if !self.users.contains_key(user) {
            return Err(no_user(user));
        }
        self.permissions
            .entry(vhost.clone())
            .or_default()
            .insert(user.clone(), p.clone());
        Ok(())
    }

    /// Clears `user`'s permissions in `vhost`; 404 if it had none.
    pub(super) fn clear_permission(&mut self, vhost: &str, user: &str) -> Result<(), AmqpError> {
        let removed = self
            .permissions
            .get_mut(vhost)
            .and_then(|users| users.remove(user));
        if removed.is_none() {
            return Err(AmqpError::new(
                ReplyCode::NotFound,
                format!("user '{user}' has no permissions in vhost '{vhost}'"),
            ));
        }
        self.permissions.retain(|_, users| !users.is_empty());
        Ok(())
    }

    /// A vhost's permissions go with it.
    pub(super) fn drop_vhost(&mut self, vhost: &str) {
        self.permissions.remove(vhost);
    }

    /// The config file's users, once: false (nothing changed) if a seed was
    /// applied before. A seeded user keeps any permission the state already
    /// gave it; a user the state already has is left as it is.
    pub(super) fn seed(&mut self, users: &[UserDef], permissions: &[PermissionEntry]) -> bool {
        if self.seeded {
            return false;
        }
        self.seeded = true;
        for u in users {
            self.users
                .entry(u.name.clone())
                .or_insert_with(|| u.clone());
        }
        for e in permissions {
            if self.users.contains_key(&e.user) {
                self.permissions
                    .entry(e.vhost.clone())
                    .or_default()
                    .entry(e.user.clone())
                    .or_insert_with(|| e.permission.clone());
            }
        }
        true
    }

    /// Rebuilt from a snapshot's lists.
    pub(super) fn restore(
        users: &[UserDef],
        permissions: &[PermissionEntry],
        seeded: bool,
    ) -> Self {
        let mut s = Self {
            seeded,
            ..Self::default()
        };
        for u in users {
            s.users.insert(u.name.clone(), u.clone());
        }
        for e in permissions {
            s.permissions
                .entry(e.vhost.clone())
                .or_default()
                .insert(e.user.clone(), e.permission.clone());
        }
        s
    }
}

fn no_user(name: &str) -> AmqpError {
    AmqpError::new(ReplyCode::NotFound, format!("no user '{name}'"))
}
