//! How a node, or `warren cluster ...`, proves itself on the cluster port:
//! the cluster secret and mutual TLS, from flags and environment over the
//! TOML file. Shared by `warren server` and the admin subcommands.

use std::path::PathBuf;

use warren_cluster::{ClusterSecret, Tls, TlsFiles};

use super::{ConfigError, FileConfig, bad, load_file};

/// Environment variable holding the cluster secret itself (never a flag:
/// command lines are visible to every user of the machine).
pub const SECRET_ENV: &str = "WARREN_CLUSTER_SECRET";

/// How a node, or `warren cluster ...`, proves itself on the cluster port:
/// shared by `warren server` and the admin subcommands.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct SecurityArgs {
    /// File holding the cluster secret every node shares (RabbitMQ's Erlang
    /// cookie plays this role); needed with --cluster-listen or --peers.
    /// WARREN_CLUSTER_SECRET may hold the secret itself instead.
    #[arg(long, env = "WARREN_CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// The secret itself, from WARREN_CLUSTER_SECRET (see
    /// [`SecurityArgs::with_env`]).
    #[arg(skip)]
    pub cluster_secret: Option<String>,
    /// This node's certificate (PEM) for mutual TLS on the cluster port.
    #[arg(long, env = "WARREN_CLUSTER_TLS_CERT")]
    pub cluster_tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, env = "WARREN_CLUSTER_TLS_KEY")]
    pub cluster_tls_key: Option<PathBuf>,
    /// The CA every node's certificate must be signed by (PEM).
    #[arg(long, env = "WARREN_CLUSTER_TLS_CA")]
    pub cluster_tls_ca: Option<PathBuf>,
}

impl SecurityArgs {
    /// Takes the secret from WARREN_CLUSTER_SECRET, if set.
    pub fn with_env(mut self) -> Self {
        if let Ok(v) = std::env::var(SECRET_ENV) {
            self.cluster_secret = Some(v);
        }
        self
    }
}

/// What the admin subcommands need to reach a node's cluster port.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ClusterClientArgs {
    /// TOML configuration file (its cluster secret and TLS settings).
    #[arg(long, env = "WARREN_CONFIG")]
    pub config: Option<PathBuf>,
    /// The cluster secret and TLS files.
    #[command(flatten)]
    pub security: SecurityArgs,
}

impl ClusterClientArgs {
    /// The security settings the admin calls use: the same sources and
    /// order as a node's. A secret is required.
    pub fn resolve(&self) -> Result<warren_cluster::Security, ConfigError> {
        let file = match &self.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        let (secret, tls) = resolve_security(&self.security, &file)?;
        let Some(secret) = secret else {
            return Err(ConfigError::Invalid(NO_SECRET.replace(
                "cluster options (--cluster-listen, --peers) need",
                "`warren cluster` needs",
            )));
        };
        Ok(warren_cluster::Security::new(Some(secret), tls))
    }
}

/// The refusal of a node with cluster options and no secret.
pub(super) const NO_SECRET: &str = "cluster options (--cluster-listen, --peers) need a cluster secret: \
--cluster-secret-file PATH (or WARREN_CLUSTER_SECRET_FILE), the secret itself in \
WARREN_CLUSTER_SECRET, or cluster-secret-file / cluster-secret in the config file; \
every node of the cluster must have the same one (like RabbitMQ's Erlang cookie)";

/// The secret and TLS material, from flags and environment over the file.
pub(super) fn resolve_security(
    args: &SecurityArgs,
    file: &FileConfig,
) -> Result<(Option<ClusterSecret>, Option<Tls>), ConfigError> {
    let secret_error = |setting: &'static str, e: warren_cluster::ClusterError| {
        bad(setting, "(hidden)", e.to_string())
    };
    let secret = if let Some(path) = &args.cluster_secret_file {
        Some(ClusterSecret::from_file(path).map_err(|e| secret_error("cluster-secret-file", e))?)
    } else if let Some(v) = &args.cluster_secret {
        Some(ClusterSecret::new(v).map_err(|e| secret_error("WARREN_CLUSTER_SECRET", e))?)
    } else if let Some(path) = &file.cluster_secret_file {
        Some(ClusterSecret::from_file(path).map_err(|e| secret_error("cluster-secret-file", e))?)
    } else if let Some(v) = &file.cluster_secret {
        Some(ClusterSecret::new(v).map_err(|e| secret_error("cluster-secret", e))?)
    } else {
        None
    };
    let cert = args
        .cluster_tls_cert
        .clone()
        .or(file.cluster_tls_cert.clone());
    let key = args
        .cluster_tls_key
        .clone()
        .or(file.cluster_tls_key.clone());
    let ca = args.cluster_tls_ca.clone().or(file.cluster_tls_ca.clone());
    let tls = match (cert, key, ca) {
        (None, None, None) => None,
        (Some(cert), Some(key), Some(ca)) => Some(
            Tls::load(&TlsFiles { cert, key, ca })
                .map_err(|e| ConfigError::Invalid(e.to_string()))?,
        ),
        _ => {
            return Err(ConfigError::Invalid(
                "mutual TLS on the cluster port needs all three of --cluster-tls-cert, \
                 --cluster-tls-key and --cluster-tls-ca"
                    .into(),
            ));
        }
    };
    Ok((secret, tls))
}
