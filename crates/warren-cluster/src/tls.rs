//! Optional mutual TLS on the cluster port (rustls with the ring provider,
//! through tonic): every node presents a certificate signed by the cluster's
//! CA and accepts only peers that do. The cluster secret is proved on top
//! (see [`crate::auth`]); TLS adds confidentiality and integrity of the
//! traffic itself.

use std::fmt;
use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::error::ClusterError;

/// Where a node's certificate, key and the cluster's CA are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// This node's certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The CA that signs every node's certificate (PEM).
    pub ca: PathBuf,
}

/// Loaded TLS material. The key is never printed.
#[derive(Clone)]
pub struct Tls {
    identity: Identity,
    ca: Certificate,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Tls(..)")
    }
}

fn read(path: &Path, what: &str, marker: &str) -> Result<Vec<u8>, ClusterError> {
    let bytes = std::fs::read(path)
        .map_err(|e| ClusterError::Tls(format!("reading the {what} {}: {e}", path.display())))?;
    let text = String::from_utf8_lossy(&bytes);
    if !text.contains("-----BEGIN ") || !text.contains(marker) {
        return Err(ClusterError::Tls(format!(
            "{} is not a PEM {what}",
            path.display()
        )));
    }
    Ok(bytes)
}

/// A transport error with its causes (tonic's own display is terse).
pub fn describe(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

impl Tls {
    /// Reads and checks the files: both sides' configurations are built once
    /// here, so a bad file stops the node at start, not at its first call.
    pub fn load(files: &TlsFiles) -> Result<Self, ClusterError> {
        let cert = read(&files.cert, "certificate", "CERTIFICATE")?;
        let key = read(&files.key, "private key", "PRIVATE KEY")?;
        let ca = read(&files.ca, "CA certificate", "CERTIFICATE")?;
        let tls = Self {
            identity: Identity::from_pem(cert, key),
            ca: Certificate::from_pem(ca),
        };
        tonic::transport::Server::builder()
            .tls_config(tls.server_config())
            .map_err(|e| ClusterError::Tls(format!("server side: {}", describe(&e))))?;
        tonic::transport::Endpoint::from_static("https://127.0.0.1:1")
            .tls_config(tls.client_config())
            .map_err(|e| ClusterError::Tls(format!("client side: {}", describe(&e))))?;
        Ok(tls)
    }

    /// The listener's side: this node's identity; peers must present a
    /// certificate of the CA.
    pub fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity.clone())
            .client_ca_root(self.ca.clone())
    }

    /// The caller's side: the peer's certificate must be the CA's and name
    /// the address called; this node presents its own.
    pub fn client_config(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(self.ca.clone())
            .identity(self.identity.clone())
    }
}
