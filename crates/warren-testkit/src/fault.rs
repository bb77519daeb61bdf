//! Faults: kill -9, SIGSTOP / SIGCONT, cutting a node's cluster links.
//!
//! A cut drops, with iptables, every packet to the node's cluster listener
//! and every packet from its address to the other nodes' cluster ports.
//! Nodes make their outgoing peer connections from their own address, so
//! this isolates the node from its peers while its AMQP listener (on
//! 127.0.0.1) stays reachable for the test's client.

use std::net::Ipv4Addr;
use std::process::Command;

use crate::Cluster;

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

/// An iptables rule that drops TCP to `to:port` (from `from`, or from anywhere).
fn drop_rule(from: Option<Ipv4Addr>, to: Ipv4Addr, port: u16) -> Vec<String> {
    let mut rule = vec!["-p".to_owned(), "tcp".to_owned()];
    if let Some(from) = from {
        rule.extend(["-s".to_owned(), from.to_string()]);
    }
    rule.extend([
        "-d".to_owned(),
        to.to_string(),
        "--dport".to_owned(),
        port.to_string(),
        "-j".to_owned(),
        "DROP".to_owned(),
    ]);
    rule
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
        let _ = child.wait();
    }

    /// SIGTERM: a graceful shutdown; waits (bounded) for the process to
    /// exit and returns whether it exited cleanly.
    pub fn terminate(&mut self, id: u64) -> bool {
        let n = self.node_mut(id);
        let Some(mut child) = n.child.take() else {
            return false;
        };
        if n.stopped {
            signal(child.id(), "CONT");
            n.stopped = false;
        }
        signal(child.id(), "TERM");
        let status = crate::wait_for_blocking(&format!("node {id} exits"), || {
            child.try_wait().ok().flatten()
        });
        status.success()
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

    /// The rules of a cut: what reaches the node's cluster listener, and
    /// what it sends to the other nodes' cluster listeners.
    fn cut_rules(&self, id: u64) -> Vec<Vec<String>> {
        let me = self.node(id);
        let mut rules = vec![drop_rule(None, me.ip, me.cluster_port)];
        for other in self.nodes.values().filter(|n| n.id != id) {
            rules.push(drop_rule(Some(me.ip), other.ip, other.cluster_port));
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
