//! Topic exchange: a trie of binding-key words.
//!
//! Binding keys are compiled once into the trie; a publish walks it with the
//! routing key's words, so its cost depends on the key's length and the number of
//! wildcard branches, not on the number of bindings. `*` matches exactly one word,
//! `#` zero or more (AMQP/RabbitMQ semantics; an empty key has zero words).
//!
//! A `#` can swallow any number of words, so a binding such as `#.#.#.z`
//! reaches the same trie node at the same word along many paths: walked
//! naively that is exponential in the number of `#`s, under the metadata
//! read lock every publish takes. The walk therefore enters each `#` node at
//! most once per word position, which bounds a route by (trie nodes × words
//! in the key); a routing key is a short string, at most 255 bytes.

use std::collections::{HashMap, HashSet};

use smallvec::SmallVec;

use super::{Counted, Target, Targets, counted_add, counted_remove};

#[derive(Debug, Default)]
pub(crate) struct TopicTrie {
    root: Node,
}

#[derive(Debug, Default)]
struct Node {
    words: HashMap<Box<str>, Node>,
    star: Option<Box<Node>>,
    hash: Option<Box<Node>>,
    targets: Counted,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.words.is_empty()
            && self.star.is_none()
            && self.hash.is_none()
            && self.targets.is_empty()
    }
}

fn words(key: &str) -> impl Iterator<Item = &str> {
    // RabbitMQ splits "" into zero words, "a..b" into ["a", "", "b"].
    key.split('.').filter(move |_| !key.is_empty())
}

impl TopicTrie {
    pub(crate) fn add(&mut self, key: &str, target: Target) {
        let mut node = &mut self.root;
        for w in words(key) {
            node = match w {
                "*" => node.star.get_or_insert_with(Default::default),
                "#" => node.hash.get_or_insert_with(Default::default),
                w => node.words.entry(w.into()).or_default(),
            };
        }
        counted_add(&mut node.targets, target);
    }

    pub(crate) fn remove(&mut self, key: &str, target: &Target) {
        let path: SmallVec<[&str; 16]> = words(key).collect();
        remove_at(&mut self.root, &path, target);
    }

    pub(crate) fn route(&self, key: &str, out: &mut Targets) {
        let path: SmallVec<[&str; 16]> = words(key).collect();
        let mut walk = Walk {
            path: &path,
            out,
            entered: HashSet::new(),
        };
        walk.node(&self.root, 0);
    }
}

/// Removes `target` under `path`; returns true when `node` became empty.
fn remove_at(node: &mut Node, path: &[&str], target: &Target) -> bool {
    match path.split_first() {
        None => {
            counted_remove(&mut node.targets, target);
        }
        Some((&"*", rest)) => {
            if let Some(child) = node.star.as_mut()
                && remove_at(child, rest, target)
            {
                node.star = None;
            }
        }
        Some((&"#", rest)) => {
            if let Some(child) = node.hash.as_mut()
                && remove_at(child, rest, target)
            {
                node.hash = None;
            }
        }
        Some((w, rest)) => {
            if let Some(child) = node.words.get_mut(*w)
                && remove_at(child, rest, target)
            {
                node.words.remove(*w);
            }
        }
    }
    node.is_empty()
}

/// One route through the trie.
struct Walk<'a, 'k> {
    /// The routing key's words.
    path: &'a [&'k str],
    out: &'a mut Targets,
    /// `#` nodes entered, by address, with the word position they were
    /// entered at: entering again could only find the same targets. (An
    /// empty `HashSet` does not allocate, so keys that meet no `#` pay
    /// nothing for it.)
    entered: HashSet<(usize, usize)>,
}

impl Walk<'_, '_> {
    /// Matches the words from position `at` on under `node`.
    fn node(&mut self, node: &Node, at: usize) {
        if let Some(hash) = &node.hash {
            let id = &**hash as *const Node as usize;
            // `#` swallows zero, one, ... or all of the remaining words.
            for skip in at..=self.path.len() {
                if self.entered.insert((id, skip)) {
                    self.node(hash, skip);
                }
            }
        }
        match self.path.get(at) {
            None => self.out.extend(node.targets.iter().map(|(t, _)| t.clone())),
            Some(w) => {
                if let Some(child) = node.words.get(*w) {
                    self.node(child, at + 1);
                }
                if let Some(star) = &node.star {
                    self.node(star, at + 1);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(binding: &str, key: &str) -> bool {
        let mut trie = TopicTrie::default();
        trie.add(binding, Target::Queue(1));
        let mut out = Targets::new();
        trie.route(key, &mut out);
        !out.is_empty()
    }

    /// Each case is (binding key, routing key, whether they match).
    fn check(cases: &[(&str, &str, bool)]) {
        for &(binding, key, expected) in cases {
            assert_eq!(
                matches(binding, key),
                expected,
                "binding {binding:?}, routing key {key:?}"
            );
        }
    }

    #[test]
    fn star_is_exactly_one_word() {
        check(&[
            ("*.critical", "kern.critical", true),
            ("*.critical", "critical", false),
            ("*.critical", "a.kern.critical", false),
            ("kern.*", "kern.info", true),
            ("kern.*", "kern", false),
            ("kern.*", "kern.info.x", false),
        ]);
    }

    #[test]
    fn hash_is_zero_or_more_words() {
        check(&[
            ("#", "", true),
            ("#", "a", true),
            ("#", "a.b.c", true),
            ("a.#", "a", true),
            ("a.#", "a.b.c", true),
            ("a.#", "b.a", false),
            ("#.z", "z", true),
            ("#.z", "a.b.z", true),
            ("a.#.z", "a.z", true),
            ("a.#.z", "a.b.c.z", true),
            ("a.#.z", "a.b.c", false),
            ("#.#", "a.b", true),
            ("*.#", "a", true),
            ("*.#", "", false),
        ]);
    }

    #[test]
    fn literal_words() {
        check(&[
            ("a.b", "a.b", true),
            ("a.b", "a.b.c", false),
            ("a.b", "a", false),
            ("", "", true),
            ("", "a", false),
            ("a..b", "a..b", true),
        ]);
    }

    #[test]
    fn remove_prunes_and_counts() {
        let mut trie = TopicTrie::default();
        trie.add("a.*", Target::Queue(1));
        trie.add("a.*", Target::Queue(1));
        trie.add("#", Target::Queue(2));
        trie.remove("a.*", &Target::Queue(1));
        let mut out = Targets::new();
        trie.route("a.b", &mut out);
        out.sort();
        assert_eq!(out.as_slice(), &[Target::Queue(1), Target::Queue(2)]);
        trie.remove("a.*", &Target::Queue(1));
        trie.remove("#", &Target::Queue(2));
        assert!(trie.root.is_empty());
    }

    /// Walked naively, 16 `#`s against 100 words would try more paths than
    /// there are atoms; entering each `#` node once per word position keeps
    /// it to (16 + 1) × 101 entries.
    #[test]
    fn many_hashes_route_in_bounded_time() {
        let binding = format!("{}z", "#.".repeat(16));
        let mut words: Vec<String> = (0..99).map(|i| format!("w{i}")).collect();
        let miss = words.join(".");
        words.push("z".into());
        let hit = words.join(".");
        check(&[(&binding, &hit, true), (&binding, &miss, false)]);
    }
}
