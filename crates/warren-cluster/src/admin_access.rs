//! The client side of the vhosts, users and permissions RPCs, for `warren
//! vhosts`, `warren users` and `warren permissions`: changes go to any node (which forwards them to
//! group 0's leader), listings come from the asked node's replica.

use warren_core::AmqpError;
use warren_core::meta::{Command, Outcome, PermissionEntry, UserDef};

use crate::admin_client::{CALL_TIMEOUT, client};
use crate::auth::Security;
use crate::error::ClusterError;
use crate::pb::{AccessChange, ListAccessRequest};

/// Proposes a vhosts, users or permissions command through the node at `server`;
/// the outer error is the call's, the inner one the state machine's answer
/// (a user that exists, a vhost that does not...).
pub async fn change_access(
    sec: &Security,
    server: &str,
    cmd: &Command,
) -> Result<Result<Outcome, AmqpError>, ClusterError> {
    let command = serde_json::to_vec(cmd).map_err(|e| ClusterError::Refused(e.to_string()))?;
    let mut c = client(sec, server, CALL_TIMEOUT * 3).await?;
    let reply = c
        .change_access(AccessChange { command })
        .await?
        .into_inner();
    serde_json::from_slice(&reply.outcome)
        .map_err(|e| ClusterError::Refused(format!("undecodable answer: {e}")))
}

/// What the node at `server` applied.
#[derive(Clone, Debug)]
pub struct AccessList {
    /// Vhosts by name, `/` first.
    pub vhosts: Vec<String>,
    /// Users by name.
    pub users: Vec<UserDef>,
    /// Permissions by vhost, then user.
    pub permissions: Vec<PermissionEntry>,
}

/// Every vhost, user and permission, as the node at `server` applied them.
pub async fn list_access(sec: &Security, server: &str) -> Result<AccessList, ClusterError> {
    let mut c = client(sec, server, CALL_TIMEOUT).await?;
    let list = c.list_access(ListAccessRequest {}).await?.into_inner();
    let undecodable = |e: serde_json::Error| ClusterError::Refused(format!("undecodable: {e}"));
    Ok(AccessList {
        vhosts: serde_json::from_slice(&list.vhosts).map_err(undecodable)?,
        users: serde_json::from_slice(&list.users).map_err(undecodable)?,
        permissions: serde_json::from_slice(&list.permissions).map_err(undecodable)?,
    })
}
