//! `warren vhosts|users|permissions add|delete|list`
//! (a module of the binary, beside `main.rs`): vhosts, users and
//! permissions through any node's cluster port, as `rabbitmqctl add_vhost`,
//! `add_user`, `set_permissions` and their kin.
//!
//! A password is hashed here, with a fresh salt, as RabbitMQ stores it
//! (salted SHA-256): only the hash crosses the network and enters the
//! replicated log.

use std::io::BufRead;

use clap::Subcommand;
use warren_cluster::admin_access;
use warren_core::access::{HashAlgorithm, PasswordHash, Permission};
use warren_core::meta::{Command, DEFAULT_VHOST, Outcome, PermissionEntry, UserDef};

use warren_server::ClusterClientArgs;

use crate::{DEFAULT_CLUSTER_SERVER, security};

/// Where the command goes.
#[derive(clap::Args, Debug)]
pub struct Target {
    /// A node's cluster address.
    #[arg(long, env = "WARREN_SERVER", default_value = DEFAULT_CLUSTER_SERVER)]
    pub server: String,
    /// The cluster secret (and TLS files) to prove.
    #[command(flatten)]
    pub auth: ClusterClientArgs,
}

/// `warren vhosts ...`.
#[derive(Subcommand, Debug)]
pub enum VhostsCommand {
    /// Add a vhost, with the predeclared exchanges.
    Add {
        /// Name.
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Delete a vhost: its exchanges, queues and their messages, bindings
    /// and permissions go (`/` cannot be deleted).
    Delete {
        /// Name.
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// The vhosts.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
}

/// `warren users ...`.
#[derive(Subcommand, Debug)]
pub enum UsersCommand {
    /// Add a user (it has no permissions until `warren permissions add`).
    Add {
        /// Login name.
        name: String,
        /// The password; read from the first line of standard input when
        /// left out (a command line is visible to every user of the machine).
        password: Option<String>,
        /// Tags, comma-separated (`administrator`, `monitoring`...).
        #[arg(long, value_delimiter = ',')]
        tags: Vec<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Delete a user and its permissions.
    Delete {
        /// Login name.
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Users and their tags.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
}

/// `warren permissions ...`.
#[derive(Subcommand, Debug)]
pub enum PermissionsCommand {
    /// Set a user's permissions in a vhost: three regular expressions
    /// matched against exchange and queue names ("" matches nothing).
    Add {
        /// The user.
        user: String,
        /// What it may declare and delete.
        configure: String,
        /// What it may publish to and bind to.
        write: String,
        /// What it may consume from, get from, purge and bind from.
        read: String,
        /// The vhost.
        #[arg(long, default_value = DEFAULT_VHOST)]
        vhost: String,
        #[command(flatten)]
        target: Target,
    },
    /// Clear a user's permissions in a vhost.
    Delete {
        /// The user.
        user: String,
        /// The vhost.
        #[arg(long, default_value = DEFAULT_VHOST)]
        vhost: String,
        #[command(flatten)]
        target: Target,
    },
    /// Every user's permissions, by vhost.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
}

/// Runs a `warren vhosts` command.
pub async fn vhosts(cmd: VhostsCommand) -> anyhow::Result<()> {
    match cmd {
        VhostsCommand::Add { name, target } => {
            change(
                &target,
                &Command::AddVhost {
                    name: name.as_str().into(),
                },
            )
            .await?;
            println!("vhost '{name}' added");
        }
        VhostsCommand::Delete { name, target } => {
            change(
                &target,
                &Command::DeleteVhost {
                    name: name.as_str().into(),
                },
            )
            .await?;
            println!("vhost '{name}' deleted");
        }
        VhostsCommand::List { json, target } => {
            let vhosts = admin_access::list_access(&security(target.auth)?, &target.server)
                .await?
                .vhosts;
            if json {
                println!("{}", serde_json::to_string_pretty(&vhosts)?);
            } else {
                for v in &vhosts {
                    println!("{v}");
                }
            }
        }
    }
    Ok(())
}

/// Runs a `warren users` command.
pub async fn users(cmd: UsersCommand) -> anyhow::Result<()> {
    match cmd {
        UsersCommand::Add {
            name,
            password,
            tags,
            target,
        } => {
            let password = match password {
                Some(p) => p,
                None => first_line_of_stdin()?,
            };
            let user = UserDef {
                name: name.as_str().into(),
                password: Some(PasswordHash::new(
                    HashAlgorithm::Sha256,
                    rand::random(),
                    &password,
                )),
                tags,
            };
            change(&target, &Command::AddUser(user)).await?;
            println!("user '{name}' added");
        }
        UsersCommand::Delete { name, target } => {
            change(
                &target,
                &Command::DeleteUser {
                    name: name.as_str().into(),
                },
            )
            .await?;
            println!("user '{name}' deleted");
        }
        UsersCommand::List { json, target } => {
            let users = admin_access::list_access(&security(target.auth)?, &target.server)
                .await?
                .users;
            if json {
                let shown: Vec<_> = users
                    .iter()
                    .map(|u| serde_json::json!({"name": &*u.name, "tags": u.tags}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&shown)?);
            } else {
                println!("user\ttags");
                for u in &users {
                    println!("{}\t[{}]", u.name, u.tags.join(", "));
                }
            }
        }
    }
    Ok(())
}

/// Runs a `warren permissions` command.
pub async fn permissions(cmd: PermissionsCommand) -> anyhow::Result<()> {
    match cmd {
        PermissionsCommand::Add {
            user,
            configure,
            write,
            read,
            vhost,
            target,
        } => {
            let permission =
                Permission::new(&configure, &write, &read).map_err(anyhow::Error::msg)?;
            let entry = PermissionEntry {
                vhost: vhost.as_str().into(),
                user: user.as_str().into(),
                permission,
            };
            change(&target, &Command::SetPermissions(entry)).await?;
            println!("permissions of '{user}' in vhost '{vhost}' set");
        }
        PermissionsCommand::Delete {
            user,
            vhost,
            target,
        } => {
            change(
                &target,
                &Command::ClearPermissions {
                    vhost: vhost.as_str().into(),
                    user: user.as_str().into(),
                },
            )
            .await?;
            println!("permissions of '{user}' in vhost '{vhost}' cleared");
        }
        PermissionsCommand::List { json, target } => {
            let entries = admin_access::list_access(&security(target.auth)?, &target.server)
                .await?
                .permissions;
            if json {
                println!("{}", serde_json::to_string_pretty(&entries)?);
            } else {
                println!("vhost\tuser\tconfigure\twrite\tread");
                for e in &entries {
                    let p = &e.permission;
                    println!(
                        "{}\t{}\t{}\t{}\t{}",
                        e.vhost,
                        e.user,
                        p.configure.source(),
                        p.write.source(),
                        p.read.source()
                    );
                }
            }
        }
    }
    Ok(())
}

/// Proposes `cmd`; the state machine's refusal becomes the command's error.
async fn change(target: &Target, cmd: &Command) -> anyhow::Result<Outcome> {
    let sec = security(target.auth.clone())?;
    match admin_access::change_access(&sec, &target.server, cmd).await? {
        Ok(outcome) => Ok(outcome),
        Err(e) => anyhow::bail!("{}", e.text),
    }
}

fn first_line_of_stdin() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    if password.is_empty() {
        anyhow::bail!("no password: give it as an argument or on standard input");
    }
    Ok(password)
}
