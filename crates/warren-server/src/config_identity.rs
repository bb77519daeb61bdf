//! A node's identity from its environment, as a StatefulSet gives it: the
//! node id from the host name's ordinal and the peers from a DNS pattern.
//! The same image then runs unchanged under docker compose (host names and
//! network aliases) and Kubernetes (pod names and a headless Service).

use std::collections::BTreeMap;

use super::{ConfigError, bad};

/// The placeholder of a peer pattern that takes the ordinal.
const ORDINAL: &str = "{i}";
/// Most nodes a pattern may name (node ids are 16-bit; a cluster this
/// large is a typo).
const MAX_CLUSTER_SIZE: u64 = 1000;

/// This machine's host name (the pod's name in Kubernetes, the service's
/// `hostname:` in compose): the kernel's, as `hostname` prints it.
pub fn hostname() -> std::io::Result<String> {
    match std::fs::read_to_string("/proc/sys/kernel/hostname") {
        Ok(h) => Ok(h.trim().to_owned()),
        // Not Linux: the shell's idea of it.
        Err(e) => std::env::var("HOSTNAME").map_err(|_| e),
    }
}

/// `warren-0` → 1, `warren-2.example` → 3: the ordinal after the last `-`
/// of the first label, plus one (node ids are non-zero).
pub fn node_id_from_hostname(host: &str) -> Result<u64, ConfigError> {
    let why =
        "expected a name ending in -N, as a StatefulSet's pods are named (warren-0 is node 1)";
    let label = host.split('.').next().unwrap_or_default();
    let ordinal = label
        .rsplit_once('-')
        .map(|(_, n)| n)
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| bad("node-id-from-hostname", host, why))?;
    let ordinal: u64 = ordinal
        .parse()
        .map_err(|_| bad("node-id-from-hostname", host, why))?;
    // Config::validate bounds the id itself.
    Ok(ordinal.saturating_add(1))
}

/// Node `i+1` at the pattern with `{i}` replaced by `i`, for `i` in
/// `0..size`.
pub fn peers_from_pattern(
    pattern: &str,
    size: Option<u64>,
) -> Result<BTreeMap<u64, String>, ConfigError> {
    if !pattern.contains(ORDINAL) || !pattern.contains(':') {
        return Err(bad(
            "peers-from-dns",
            pattern,
            "expected host{i}...:port, {i} standing for 0, 1, ... (warren-{i}.warren-headless:25672)",
        ));
    }
    let Some(size) = size else {
        return Err(ConfigError::Invalid(
            "--peers-from-dns needs --cluster-size (WARREN_CLUSTER_SIZE)".into(),
        ));
    };
    if size == 0 || size > MAX_CLUSTER_SIZE {
        return Err(bad(
            "cluster-size",
            size.to_string(),
            format!("expected 1..={MAX_CLUSTER_SIZE}"),
        ));
    }
    Ok((0..size)
        .map(|i| (i + 1, pattern.replace(ORDINAL, &i.to_string())))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ordinal_of_a_statefulset_pod_gives_the_node_id() {
        assert_eq!(node_id_from_hostname("warren-0").ok(), Some(1));
        assert_eq!(node_id_from_hostname("warren-2").ok(), Some(3));
        assert_eq!(node_id_from_hostname("my-broker-17").ok(), Some(18));
        assert_eq!(
            node_id_from_hostname("warren-1.warren-headless.ns.svc").ok(),
            Some(2)
        );
        for bad in ["warren", "warren-", "warren-x", "warren-1a", "", "-"] {
            assert!(node_id_from_hostname(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_pattern_names_every_node_from_one() {
        let peers =
            peers_from_pattern("warren-{i}.h.ns.svc.cluster.local:25672", Some(3)).expect("peers");
        assert_eq!(
            peers.into_iter().collect::<Vec<_>>(),
            vec![
                (1, "warren-0.h.ns.svc.cluster.local:25672".to_owned()),
                (2, "warren-1.h.ns.svc.cluster.local:25672".to_owned()),
                (3, "warren-2.h.ns.svc.cluster.local:25672".to_owned()),
            ]
        );
    }

    #[test]
    fn a_pattern_needs_the_placeholder_a_port_and_a_size() {
        assert!(peers_from_pattern("warren.h:25672", Some(3)).is_err());
        assert!(peers_from_pattern("warren-{i}.h", Some(3)).is_err());
        assert!(peers_from_pattern("warren-{i}.h:25672", None).is_err());
        assert!(peers_from_pattern("warren-{i}.h:25672", Some(0)).is_err());
        assert!(peers_from_pattern("warren-{i}.h:25672", Some(1001)).is_err());
    }
}
