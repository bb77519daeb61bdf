//! Fanout exchange: every bound target, whatever the key.

use super::{Counted, Target, Targets, counted_add, counted_remove};

#[derive(Debug, Default)]
pub(crate) struct FanoutIndex {
    targets: Counted,
}

impl FanoutIndex {
    pub(crate) fn add(&mut self, target: Target) {
        counted_add(&mut self.targets, target);
    }

    pub(crate) fn remove(&mut self, target: &Target) {
        counted_remove(&mut self.targets, target);
    }

    pub(crate) fn route(&self, out: &mut Targets) {
        out.extend(self.targets.iter().map(|(t, _)| t.clone()));
    }
}
