//! Topic exchange: a trie of binding-key words.
//!
//! Binding keys are compiled once into the trie; a publish walks it with the
//! routing key's words, so its cost depends on the key's length and the number of
//! wildcard branches, not on the number of bindings. `*` matches exactly one word,
//! `#` zero or more (AMQP/RabbitMQ semantics; an empty key has zero words).

use std::collections::HashMap;

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
        walk(&self.root, &path, out);
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

fn walk(node: &Node, path: &[&str], out: &mut Targets) {
    if let Some(hash) = &node.hash {
        // `#` swallows zero, one, ... or all of the remaining words.
        for skip in 0..=path.len() {
            walk(hash, &path[skip..], out);
        }
    }
    match path.split_first() {
        None => out.extend(node.targets.iter().map(|(t, _)| t.clone())),
        Some((w, rest)) => {
            if let Some(child) = node.words.get(*w) {
                walk(child, rest, out);
            }
            if let Some(star) = &node.star {
                walk(star, rest, out);
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

    #[test]
    fn star_is_exactly_one_word() {
        assert!(matches("*.critical", "kern.critical"));
        assert!(!matches("*.critical", "critical"));
        assert!(!matches("*.critical", "a.kern.critical"));
        assert!(matches("kern.*", "kern.info"));
        assert!(!matches("kern.*", "kern"));
        assert!(!matches("kern.*", "kern.info.x"));
    }

    #[test]
    fn hash_is_zero_or_more_words() {
        assert!(matches("#", ""));
        assert!(matches("#", "a"));
        assert!(matches("#", "a.b.c"));
        assert!(matches("a.#", "a"));
        assert!(matches("a.#", "a.b.c"));
        assert!(!matches("a.#", "b.a"));
        assert!(matches("#.z", "z"));
        assert!(matches("#.z", "a.b.z"));
        assert!(matches("a.#.z", "a.z"));
        assert!(matches("a.#.z", "a.b.c.z"));
        assert!(!matches("a.#.z", "a.b.c"));
        assert!(matches("#.#", "a.b"));
        assert!(matches("*.#", "a"));
        assert!(!matches("*.#", ""));
    }

    #[test]
    fn literal_words() {
        assert!(matches("a.b", "a.b"));
        assert!(!matches("a.b", "a.b.c"));
        assert!(!matches("a.b", "a"));
        assert!(matches("", ""));
        assert!(!matches("", "a"));
        assert!(matches("a..b", "a..b"));
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
}
