//! Direct exchange: the routing key must equal the binding key.

use std::collections::HashMap;

use super::{Counted, Target, Targets, counted_add, counted_remove};

/// Binding key -> targets.
#[derive(Debug, Default)]
pub(crate) struct DirectIndex {
    by_key: HashMap<Box<str>, Counted>,
}

impl DirectIndex {
    pub(crate) fn add(&mut self, key: &str, target: Target) {
        counted_add(self.by_key.entry(key.into()).or_default(), target);
    }

    pub(crate) fn remove(&mut self, key: &str, target: &Target) {
        if let Some(list) = self.by_key.get_mut(key)
            && counted_remove(list, target)
        {
            self.by_key.remove(key);
        }
    }

    pub(crate) fn route(&self, key: &str, out: &mut Targets) {
        if let Some(list) = self.by_key.get(key) {
            out.extend(list.iter().map(|(t, _)| t.clone()));
        }
    }
}
