//! Liveness of peers, and what quorum queue groups do about it.
//!
//! Queue groups run with openraft's heartbeats and election timers off: a
//! node may hold a thousand groups, and a heartbeat per group and follower
//! every 150 ms took two cores while nothing was published
//! (docs/decisions.md, "Queue groups without heartbeats of their own").
//! Their followers watch the leader's *node* instead, as Ra's do, and this
//! module does that once per node pair rather than once per group:
//!
//! - every node pings every other every [`PROBE_EVERY`];
//! - a peer that has not answered for [`DOWN_AFTER`] is down: each local
//!   follower whose group is led from it calls an election. The surviving
//!   voters go in an order that rotates with the group (the first at once,
//!   the next [`RANK_STEP`] later, each with a random stagger), so that two
//!   followers do not split the vote and the new leaders spread;
//! - a candidate refused by a voter whose log is longer than its own
//!   ([`Outranked`]) calls no election for [`OUTRANKED_FOR`]: it cannot win
//!   while that voter lives, and each of its elections would take the term
//!   the voter's next one needs (openraft's voters do not adopt the term of
//!   a candidate they refuse for its log, so two such followers could take
//!   turns forever);
//! - a leader that is no longer a member of the cluster (removed while it
//!   was down) or no longer a voter of its group (it removed itself)
//!   counts as down too: nobody else would notice;
//! - a voter that knows no leader for [`LEADERLESS_AFTER`] (a candidate
//!   that lost, a group whose leader stepped down) calls one too;
//! - a peer that answers again, or answers with a new incarnation (it
//!   restarted between two probes), hears at once from every local leader
//!   of a group it belongs to, and a leader whose live follower lags sends
//!   it a heartbeat every [`LAG_EVERY`]: openraft then sends what it missed
//!   (entries or a snapshot), which it would otherwise only do with the
//!   group's next write.
//!
//! Entries and the commit index still travel with every write, so a busy
//! group behaves as before; an idle one sends nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use openraft::ServerState;
use rand::Rng;
use warren_core::NodeId;
use warren_store::raft::GroupId;

use crate::pb::PingRequest;
use crate::pb::cluster_client::ClusterClient;
use crate::{MetaNode, QueueGroups};

/// How often each peer is pinged.
pub const PROBE_EVERY: Duration = Duration::from_millis(150);
/// Bound on one ping.
const PROBE_TIMEOUT: Duration = Duration::from_millis(400);
/// A peer silent this long is down (three probes).
pub const DOWN_AFTER: Duration = Duration::from_millis(450);
/// How often the groups are looked at.
const TICK: Duration = Duration::from_millis(100);
/// A voter without a known leader this long calls an election.
pub const LEADERLESS_AFTER: Duration = Duration::from_millis(2000);
/// Between the elections of successive voters in a group's order.
pub const RANK_STEP: Duration = Duration::from_millis(300);
/// Random spread of the elections one node calls at once.
const STAGGER_MS: u64 = 100;
/// An election that did not end with a leader is called again after this.
const RETRY_EVERY: Duration = Duration::from_millis(500);
/// How often a leader nudges its lagging followers.
pub const LAG_EVERY: Duration = Duration::from_millis(500);

/// How long a candidate refused for its short log leaves elections to
/// others.
pub const OUTRANKED_FOR: Duration = Duration::from_secs(3);

/// Groups whose last election a peer refused because its log is longer
/// (noted by the Raft client, read by the watcher).
#[derive(Clone, Debug, Default)]
pub struct Outranked(Arc<Mutex<HashMap<GroupId, Instant>>>);

impl Outranked {
    /// Group `group`'s candidate was refused for its log just now.
    pub fn note(&self, group: GroupId) {
        let mut m = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        m.retain(|_, at| at.elapsed() < OUTRANKED_FOR);
        m.insert(group, Instant::now());
    }

    /// Whether `group` was outranked less than [`OUTRANKED_FOR`] ago.
    pub fn holds(&self, group: GroupId) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&group)
            .is_some_and(|at| at.elapsed() < OUTRANKED_FOR)
    }
}

/// This process's incarnation, answered to pings: random, chosen once.
pub fn incarnation() -> u64 {
    static ONE: OnceLock<u64> = OnceLock::new();
    *ONE.get_or_init(|| rand::rng().random::<u64>() | 1)
}

/// What the probers learnt of one peer.
#[derive(Clone, Debug)]
struct Probed {
    /// The address its prober pings.
    addr: String,
    /// When its prober started: a peer not heard from since then for
    /// [`DOWN_AFTER`] is down, one probed for less is not judged yet.
    since: Instant,
    /// Its last answer.
    last_ok: Option<Instant>,
    /// The incarnation in that answer.
    incarnation: u64,
}

impl Probed {
    fn down(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last_ok.unwrap_or(self.since)) >= DOWN_AFTER
    }
}

type Table = Arc<Mutex<HashMap<NodeId, Probed>>>;

/// One peer's state as the watcher last saw it.
#[derive(Clone, Copy, Debug, Default)]
struct Known {
    up: bool,
    incarnation: u64,
}

/// A follower's wait for a leader.
#[derive(Clone, Copy, Debug)]
struct Leaderless {
    since: Instant,
    next_try: Instant,
}

/// Runs for the life of the node: probes the members of group 0 and acts
/// on the quorum queue groups of this node.
pub async fn watch_peers(node: Weak<MetaNode>, groups: Weak<QueueGroups>) {
    let table: Table = Arc::default();
    let mut known: HashMap<NodeId, Known> = HashMap::new();
    let mut waiting: HashMap<GroupId, Leaderless> = HashMap::new();
    let mut next_lag_check = Instant::now();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (Some(node), Some(groups)) = (node.upgrade(), groups.upgrade()) else {
            return;
        };
        let members = start_probers(&node, &table);
        let now = Instant::now();
        let probed: HashMap<NodeId, Probed> =
            table.lock().unwrap_or_else(PoisonError::into_inner).clone();
        // A node no longer in the cluster (removed, perhaps dead) is down
        // for the groups it still led: nobody probes it any more.
        let down = |id: NodeId| match probed.get(&id) {
            Some(p) => p.down(now),
            None => !members.is_empty() && !members.contains(&id),
        };
        let mut back = Vec::new();
        for (id, p) in &probed {
            let k = known.entry(*id).or_default();
            let up = !p.down(now) && p.last_ok.is_some();
            if up && (!k.up || k.incarnation != p.incarnation) {
                back.push(*id);
            }
            if k.up && !up {
                tracing::info!(
                    node = id,
                    "peer does not answer: its quorum queue groups elect"
                );
            }
            k.up = up;
            if up {
                k.incarnation = p.incarnation;
            }
        }
        known.retain(|id, _| probed.contains_key(id));
        let check_lag = now >= next_lag_check;
        if check_lag {
            next_lag_check = now + LAG_EVERY;
        }
        let me = groups.me();
        let mut running = Vec::new();
        for (id, g) in groups.all() {
            running.push(id);
            let (leading, nudge, leader, voters) = {
                let m = g.raft.metrics();
                let m = m.borrow();
                let membership = m.membership_config.membership();
                if m.state == ServerState::Leader {
                    let last = m.last_log_index;
                    let behind = check_lag
                        && m.replication.as_ref().is_some_and(|r| {
                            r.iter().any(|(n, l)| {
                                *n != me && !down(*n) && l.as_ref().map(|l| l.index) < last
                            })
                        });
                    let returned = back.iter().any(|n| membership.get_node(n).is_some());
                    (true, behind || returned, None, Vec::new())
                } else {
                    let voters: Vec<NodeId> = membership.voter_ids().collect();
                    (false, false, m.current_leader, voters)
                }
            };
            if leading {
                waiting.remove(&id);
                if nudge && let Err(e) = g.raft.trigger().heartbeat().await {
                    tracing::debug!(group = id, cause = %e, "heartbeat not sent");
                }
                continue;
            }
            if !voters.contains(&me) {
                waiting.remove(&id);
                continue;
            }
            // A leader that left the group's voters (it removed itself)
            // leads no more, though its node answers.
            let leader_down = match leader {
                Some(l) if l != me && !down(l) && voters.contains(&l) => {
                    waiting.remove(&id);
                    continue;
                }
                Some(l) if l != me => true,
                _ => false,
            };
            let w = waiting.entry(id).or_insert(Leaderless {
                since: now,
                next_try: now,
            });
            let patience = if leader_down {
                Duration::ZERO
            } else {
                LEADERLESS_AFTER
            };
            if now.duration_since(w.since) < patience
                || now < w.next_try
                || groups.network().outranked().holds(id)
            {
                continue;
            }
            let alive: Vec<NodeId> = voters
                .iter()
                .copied()
                .filter(|v| Some(*v) != leader && !down(*v))
                .collect();
            let delay = election_delay(id, me, &alive);
            w.next_try = now + delay + RETRY_EVERY;
            let raft = g.raft.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let (state, now_leader) = {
                    let m = raft.metrics();
                    let m = m.borrow();
                    (m.state, m.current_leader)
                };
                // Someone else won meanwhile, or this replica leads.
                if state == ServerState::Leader || (now_leader.is_some() && now_leader != leader) {
                    return;
                }
                tracing::debug!(group = id, ?leader, "calling an election");
                if let Err(e) = raft.trigger().elect().await {
                    tracing::debug!(group = id, cause = %e, "election not called");
                }
            });
        }
        waiting.retain(|id, _| running.binary_search(id).is_ok());
    }
}

/// When this node, among the live voters `alive` of group `id`, calls its
/// election: the order rotates with the group, so that leaders spread over
/// the survivors; each election has a random stagger, so that hundreds of
/// groups losing their leader at once do not all start in the same
/// millisecond.
fn election_delay(id: GroupId, me: NodeId, alive: &[NodeId]) -> Duration {
    let stagger = Duration::from_millis(rand::rng().random_range(0..STAGGER_MS));
    let mut order: Vec<NodeId> = alive.to_vec();
    order.sort_unstable();
    if order.is_empty() {
        return stagger;
    }
    let len = order.len() as u64;
    let start = usize::try_from(id % len).unwrap_or(0);
    order.rotate_left(start);
    let rank = order.iter().position(|n| *n == me).unwrap_or(order.len());
    RANK_STEP * u32::try_from(rank).unwrap_or(u32::MAX / 1000).min(16) + stagger
}

/// Starts a prober for each peer of group 0 that has none (a new member,
/// or one whose address changed); a prober ends when its peer leaves.
/// Returns the ids of group 0's members.
fn start_probers(node: &Arc<MetaNode>, table: &Table) -> Vec<NodeId> {
    let me = node.id();
    let members = node.member_addrs();
    let ids: Vec<NodeId> = members.iter().map(|(id, _)| *id).collect();
    let mut t = table.lock().unwrap_or_else(PoisonError::into_inner);
    t.retain(|id, p| members.iter().any(|(m, a)| m == id && *a == p.addr));
    for (id, addr) in members {
        if id == me || t.contains_key(&id) {
            continue;
        }
        t.insert(
            id,
            Probed {
                addr: addr.clone(),
                since: Instant::now(),
                last_ok: None,
                incarnation: 0,
            },
        );
        tokio::spawn(probe_peer(
            Arc::downgrade(node),
            Arc::clone(table),
            id,
            addr,
        ));
    }
    ids
}

/// Pings peer `id` at `addr` every [`PROBE_EVERY`] while it is a member
/// there, noting each answer in `table`.
async fn probe_peer(node: Weak<MetaNode>, table: Table, id: NodeId, addr: String) {
    loop {
        let started = tokio::time::Instant::now();
        let answer = {
            let Some(node) = node.upgrade() else { return };
            ping(&node, &addr).await
        };
        {
            let mut t = table.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(p) = t.get_mut(&id).filter(|p| p.addr == addr) else {
                return;
            };
            if let Some(incarnation) = answer {
                p.last_ok = Some(Instant::now());
                p.incarnation = incarnation;
            }
        }
        tokio::time::sleep_until(started + PROBE_EVERY).await;
    }
}

/// The incarnation of the node at `addr`, `None` if it does not answer in
/// time (or refuses this node).
async fn ping(node: &MetaNode, addr: &str) -> Option<u64> {
    let channel = node.network().channel(addr).ok()?;
    let mut req = tonic::Request::new(PingRequest {});
    req.set_timeout(PROBE_TIMEOUT);
    let r = tokio::time::timeout(PROBE_TIMEOUT, ClusterClient::new(channel).ping(req))
        .await
        .ok()?;
    r.ok().map(|r| r.into_inner().incarnation)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_voter_in_the_rotated_order_goes_first() {
        // Group 4 over survivors [2, 3]: 4 % 2 = 0, so 2 first, 3 next.
        let d2 = election_delay(4, 2, &[3, 2]);
        let d3 = election_delay(4, 3, &[2, 3]);
        assert!(d2 < Duration::from_millis(STAGGER_MS));
        assert!(d3 >= RANK_STEP && d3 < RANK_STEP + Duration::from_millis(STAGGER_MS));
        // Group 5: 3 first.
        assert!(election_delay(5, 3, &[2, 3]) < Duration::from_millis(STAGGER_MS));
        assert!(election_delay(5, 2, &[2, 3]) >= RANK_STEP);
    }

    #[test]
    fn the_followers_lease_ends_before_a_leaders_node_counts_as_down() {
        // Down is judged DOWN_AFTER past the last answer, which may have come
        // up to PROBE_EVERY before the leader's last entry.
        let lease = Duration::from_millis(crate::QueueTiming::default().election_max_ms);
        assert!(lease < DOWN_AFTER - PROBE_EVERY);
    }

    #[test]
    fn a_voter_that_sees_no_other_survivor_goes_without_rank_delay() {
        assert!(election_delay(7, 1, &[]) < Duration::from_millis(STAGGER_MS));
    }

    #[test]
    fn an_outranked_group_is_held_back_for_a_while() {
        let o = Outranked::default();
        assert!(!o.holds(3));
        o.note(3);
        assert!(o.holds(3));
        assert!(!o.holds(4));
    }

    #[test]
    fn a_peer_is_judged_down_only_after_the_silence() {
        let t0 = Instant::now();
        let p = Probed {
            addr: String::new(),
            since: t0,
            last_ok: None,
            incarnation: 0,
        };
        assert!(!p.down(t0 + Duration::from_millis(100)));
        assert!(p.down(t0 + DOWN_AFTER));
        let answered = Probed {
            last_ok: Some(t0 + Duration::from_millis(400)),
            ..p
        };
        assert!(!answered.down(t0 + DOWN_AFTER));
        assert!(answered.down(t0 + Duration::from_millis(400) + DOWN_AFTER));
    }
}
