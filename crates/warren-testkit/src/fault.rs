//! Faults: kill -9, SIGSTOP / SIGCONT, cutting a node's cluster links.
//!
//! A cut drops, with iptables, every packet to the node's cluster listener
//! and every packet from its address to the other nodes' cluster ports.
//! Nodes make their outgoing peer connections from their own address, so
//! this isolates the node from its peers while its AMQP listener (on
//! 127.0.0.1) stays reachable for the test's client.

use std::process::Command;
use std::time::Instant;

use crate::{Cluster, REAP};

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{sig} {pid} failed");
}

/// Runs iptables; the error text if it fails.
fn iptables(args: &[String]) -> Result<(), String> {
    let out = Command::new("iptables")
        .args(args)
        .output()
        .map_err(|e| format!("iptables (installed by scripts/deps, run as root): {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "iptables {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    ))
}

impl Cluster {
    /// kill -9 the node and reap it.
    pub fn kill9(&mut self, id: u64) {
        let n = self.node_mut(id);
        let Some(mut child) = n.child.take() else {
            return;
        };
        if n.stopped {
            signal(child.id(), "CONT");
            n.stopped = false;
        }
        let _ = child.kill();
        let end = Instant::now() + REAP;
        while Instant::now() < end {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let _ = child.wait();
    }

    /// SIGSTOP: the process freezes, its sockets stay open.
    pub fn pause(&mut self, id: u64) {
        let n = self.node_mut(id);
        if let Some(pid) = n.pid() {
            signal(pid, "STOP");
            n.stopped = true;
        }
    }

    /// SIGCONT after [`Cluster::pause`].
    pub fn resume(&mut self, id: u64) {
        let n = self.node_mut(id);
        if let Some(pid) = n.pid() {
            signal(pid, "CONT");
            n.stopped = false;
        }
    }

    fn cut_rules(&self, id: u64) -> Vec<Vec<String>> {
        let me = self.node(id);
        let mut rules = vec![vec![
            "-p".into(),
            "tcp".into(),
            "-d".into(),
            me.ip.to_string(),
            "--dport".into(),
            me.cluster_port.to_string(),
            "-j".into(),
            "DROP".into(),
        ]];
        for other in self.nodes.values().filter(|n| n.id != id) {
            rules.push(vec![
                "-p".into(),
                "tcp".into(),
                "-s".into(),
                me.ip.to_string(),
                "-d".into(),
                other.ip.to_string(),
                "--dport".into(),
                other.cluster_port.to_string(),
                "-j".into(),
                "DROP".into(),
            ]);
        }
        rules
    }

    /// Cuts node `id` off from its peers (both directions).
    pub fn cut(&mut self, id: u64) {
        for r in self.cut_rules(id) {
            let mut args = vec!["-I".to_owned(), "INPUT".to_owned()];
            args.extend(r);
            if let Err(e) = iptables(&args) {
                self.heal(id);
                panic!("cannot cut node {id}: {e}");
            }
            self.cut.push(id);
        }
    }

    /// Undoes [`Cluster::cut`].
    pub fn heal(&mut self, id: u64) {
        for r in self.cut_rules(id) {
            let mut args = vec!["-D".to_owned(), "INPUT".to_owned()];
            args.extend(r);
            // Missing rules (a cut that failed half-way) are fine.
            let _ = iptables(&args);
        }
        self.cut.retain(|c| *c != id);
    }
}
