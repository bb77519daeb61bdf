//! Confirm mode and transactions.
//!
//! A channel is in at most one of them (RabbitMQ refuses to switch, 406).
//! Both use the same bookkeeping ([`warren_core::confirms::Confirms`]): in
//! confirm mode its replies become `basic.ack`/`basic.nack`; in tx mode a
//! commit routes the buffered publishes and answers `commit-ok` once all of
//! them are accepted, durable ones written.

use amq_protocol::protocol::{AMQPClass, confirm, tx};
use warren_amqp::Content;
use warren_amqp::methods::{MethodId, TX_COMMIT};
use warren_core::AmqpError;

use super::ctx::ConnCtx;
use super::{Channel, reply};

/// The channel's publishing mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Fire and forget.
    Normal,
    /// `confirm.select` was received.
    Confirm,
    /// `tx.select` was received.
    Tx,
}

/// What a transaction holds until commit.
#[derive(Debug, Default)]
pub struct TxBuffer {
    pub(super) publishes: Vec<Content>,
    /// Body bytes of `publishes` (counted in the connection's held bytes).
    pub(super) bytes: u64,
    pub(super) acks: Vec<(u64, bool, Option<bool>)>,
    commit_pending: bool,
    /// A queue refused a message of the transaction (nack): the commit
    /// fails, as RabbitMQ's "partial tx completion".
    pub(super) failed: bool,
}

impl Channel {
    pub(super) fn confirm_select(
        &mut self,
        nowait: bool,
        ctx: &mut ConnCtx,
    ) -> Result<(), AmqpError> {
        if self.mode == Mode::Tx {
            return Err(AmqpError::precondition(
                "cannot switch from tx to confirm mode",
            ));
        }
        self.mode = Mode::Confirm;
        self.answer(
            ctx,
            nowait,
            AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})),
        )
    }

    pub(super) fn tx_select(&mut self, ctx: &mut ConnCtx) -> Result<(), AmqpError> {
        if self.mode == Mode::Confirm {
            return Err(AmqpError::precondition(
                "cannot switch from confirm to tx mode",
            ));
        }
        self.mode = Mode::Tx;
        reply(
            ctx,
            self.id,
            AMQPClass::Tx(tx::AMQPMethod::SelectOk(tx::SelectOk {})),
        )
    }

    pub(super) async fn tx_commit(&mut self, ctx: &mut ConnCtx) -> Result<(), AmqpError> {
        if self.mode != Mode::Tx {
            return Err(AmqpError::precondition("channel is not transactional"));
        }
        let buffered = std::mem::take(&mut self.tx);
        ctx.held -= buffered.bytes as i64;
        for c in buffered.publishes {
            self.route(c, ctx)?;
        }
        for (tag, multiple, requeue) in buffered.acks {
            self.apply_ack(tag, multiple, requeue, ctx);
        }
        ctx.flush().await;
        self.tx.commit_pending = true;
        self.confirms_dirty = true;
        // Replied from `maybe_commit_ok` once every durable write has landed.
        Ok(())
    }

    pub(super) fn tx_rollback(&mut self, ctx: &mut ConnCtx) -> Result<(), AmqpError> {
        if self.mode != Mode::Tx {
            return Err(AmqpError::precondition("channel is not transactional"));
        }
        self.tx.publishes.clear();
        ctx.held -= std::mem::take(&mut self.tx.bytes) as i64;
        self.tx.acks.clear();
        reply(
            ctx,
            self.id,
            AMQPClass::Tx(tx::AMQPMethod::RollbackOk(tx::RollbackOk {})),
        )
    }

    pub(super) fn maybe_commit_ok(
        &mut self,
        ctx: &mut ConnCtx,
    ) -> Result<(), (AmqpError, MethodId)> {
        if !self.tx.commit_pending {
            return Ok(());
        }
        if !self.confirms.is_idle() {
            // Still waiting: stay dirty so the next event re-checks.
            self.confirms_dirty = true;
            return Ok(());
        }
        self.tx.commit_pending = false;
        if std::mem::take(&mut self.tx.failed) {
            let e = AmqpError::precondition("partial tx completion");
            return Err((e, TX_COMMIT));
        }
        let _ = reply(
            ctx,
            self.id,
            AMQPClass::Tx(tx::AMQPMethod::CommitOk(tx::CommitOk {})),
        );
        Ok(())
    }
}
