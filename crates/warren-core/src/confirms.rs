//! Publisher confirms of one channel (RabbitMQ's `rabbit_confirms`).
//!
//! Each publish in confirm mode gets the next sequence number and a count of
//! acceptances it waits for (one per durable target queue that must write it to
//! disk; zero for a transient message). Replies go out in sequence order and are
//! coalesced: a run of settled messages becomes one `basic.ack` with
//! `multiple=true`, which is what keeps confirms cheap under load.

use std::collections::VecDeque;

/// One `basic.ack` / `basic.nack` to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfirmReply {
    /// The delivery tag (publish sequence number).
    pub tag: u64,
    /// Covers every unconfirmed tag up to `tag`.
    pub multiple: bool,
    /// Ack (true) or nack (false).
    pub ack: bool,
}

#[derive(Debug)]
struct Pending {
    seq: u64,
    waits: u32,
    nack: bool,
}

/// Confirm bookkeeping for one channel.
#[derive(Debug)]
pub struct Confirms {
    next: u64,
    pending: VecDeque<Pending>,
}

impl Default for Confirms {
    fn default() -> Self {
        Self {
            next: 1,
            pending: VecDeque::new(),
        }
    }
}

impl Confirms {
    /// Registers a publish waiting for `waits` acceptances; returns its tag.
    pub fn publish(&mut self, waits: u32) -> u64 {
        let seq = self.next;
        self.next += 1;
        self.pending.push_back(Pending {
            seq,
            waits,
            nack: false,
        });
        seq
    }

    /// Tags still waiting.
    pub fn unconfirmed(&self) -> usize {
        self.pending.iter().filter(|p| p.waits > 0).count()
    }

    /// True when nothing waits.
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty()
    }

    /// One acceptance of `seq` arrived (`ok == false`: it failed, nack it).
    pub fn settle(&mut self, seq: u64, ok: bool) {
        if let Ok(i) = self.pending.binary_search_by_key(&seq, |p| p.seq)
            && let Some(p) = self.pending.get_mut(i)
        {
            p.waits = p.waits.saturating_sub(1);
            p.nack |= !ok;
        }
    }

    /// Fails every pending publish (e.g. a queue went away before writing).
    pub fn fail(&mut self, seq: u64) {
        if let Ok(i) = self.pending.binary_search_by_key(&seq, |p| p.seq)
            && let Some(p) = self.pending.get_mut(i)
        {
            p.waits = 0;
            p.nack = true;
        }
    }

    /// The replies that can go out now, in order, coalesced.
    pub fn take_replies(&mut self, out: &mut Vec<ConfirmReply>) {
        let mut run: Option<(u64, u64)> = None; // (first, last) of settled acks
        while let Some(p) = self.pending.front() {
            if p.waits > 0 {
                break;
            }
            let (seq, nack) = (p.seq, p.nack);
            self.pending.pop_front();
            if nack {
                if let Some((first, last)) = run.take() {
                    out.push(ack_run(first, last));
                }
                out.push(ConfirmReply {
                    tag: seq,
                    multiple: false,
                    ack: false,
                });
            } else {
                run = Some(match run {
                    Some((first, _)) => (first, seq),
                    None => (seq, seq),
                });
            }
        }
        if let Some((first, last)) = run {
            out.push(ack_run(first, last));
        }
    }
}

fn ack_run(first: u64, last: u64) -> ConfirmReply {
    ConfirmReply {
        tag: last,
        multiple: first != last,
        ack: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(c: &mut Confirms) -> Vec<ConfirmReply> {
        let mut v = vec![];
        c.take_replies(&mut v);
        v
    }

    #[test]
    fn coalesces_in_order() {
        let mut c = Confirms::default();
        let a = c.publish(1);
        let b = c.publish(0);
        let d = c.publish(1);
        assert!(take(&mut c).is_empty(), "1 still waits");
        c.settle(d, true);
        assert!(take(&mut c).is_empty(), "order kept: 3 waits for 1");
        c.settle(a, true);
        assert_eq!(
            take(&mut c),
            vec![ConfirmReply {
                tag: d,
                multiple: true,
                ack: true
            }]
        );
        assert_eq!(b, 2);
        assert!(c.is_idle());
    }

    #[test]
    fn nacks_split_runs() {
        let mut c = Confirms::default();
        c.publish(0);
        let b = c.publish(1);
        c.publish(0);
        c.settle(b, false);
        assert_eq!(
            take(&mut c),
            vec![
                ConfirmReply {
                    tag: 1,
                    multiple: false,
                    ack: true
                },
                ConfirmReply {
                    tag: 2,
                    multiple: false,
                    ack: false
                },
                ConfirmReply {
                    tag: 3,
                    multiple: false,
                    ack: true
                },
            ]
        );
    }
}
