//! The state graph of an `allow_transitions` rule, and which changes of
//! the column it allows.
use std::collections::BTreeMap;

use crate::fast_hash::FastSet;

/// A column value as the rule sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// NULL, or no old row (an INSERT).
    Null,
    /// A value the graph does not name.
    Unknown,
    /// The state at this position of [`StateGraph::names`].
    State(usize),
}

/// Every state `graph` names, as a source or a target, sorted.
pub fn states(graph: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    let mut names: Vec<String> = graph
        .iter()
        .flat_map(|(from, to)| std::iter::once(from.clone()).chain(to.iter().cloned()))
        .collect();
    names.sort();
    names.dedup();
    names
}

#[derive(Debug, Clone, Default)]
pub struct StateGraph {
    /// Every state the graph names, as a source or a target, sorted.
    pub names: Vec<String>,
    /// For each state's position, the positions it may change to.
    next: Vec<FastSet<usize>>,
}

impl StateGraph {
    pub fn new(graph: &BTreeMap<String, Vec<String>>) -> StateGraph {
        let names = states(graph);
        let position = |state: &String| names.binary_search(state).ok();
        let mut next = vec![FastSet::default(); names.len()];
        for (from, to) in graph {
            if let Some(from) = position(from) {
                next[from].extend(to.iter().filter_map(position));
            }
        }
        StateGraph { names, next }
    }

    /// How the graph sees `value` (None for NULL).
    pub fn seen(&self, value: Option<&str>) -> Seen {
        match value {
            None => Seen::Null,
            Some(value) => self
                .names
                .binary_search_by(|n| n.as_str().cmp(value))
                .map_or(Seen::Unknown, Seen::State),
        }
    }

    /// True when the column may change from `from` to `to`; `unchanged`
    /// when the row's old and new values are the same value.
    ///
    /// Back to NULL only from NULL; a value kept as it is, always; into
    /// the graph from NULL or from a value it does not name, at any of its
    /// states (an entry point); from a state, only along an edge.
    pub fn allows(&self, from: Seen, to: Seen, unchanged: bool) -> bool {
        match (from, to) {
            (from, Seen::Null) => from == Seen::Null,
            _ if unchanged => true,
            (Seen::Null | Seen::Unknown, to) => to != Seen::Unknown,
            (Seen::State(from), Seen::State(to)) => self.next[from].contains(&to),
            (Seen::State(_), Seen::Unknown) => false,
        }
    }

    /// The states `from` may change to, sorted.
    pub fn targets(&self, from: usize) -> Vec<&str> {
        let mut targets: Vec<&str> = self.next[from].iter().map(|i| self.names[*i].as_str()).collect();
        targets.sort();
        targets
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn graph(edges: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        edges
            .iter()
            .map(|(from, to)| (from.to_string(), to.iter().map(|t| t.to_string()).collect()))
            .collect()
    }

    #[test]
    fn an_order_lifecycle() {
        let g = StateGraph::new(&graph(&[("new", &["paid", "cancelled"]), ("paid", &["shipped"])]));
        assert_eq!(g.names, ["cancelled", "new", "paid", "shipped"]);
        let s = |v: &str| g.seen(Some(v));
        assert!(g.allows(Seen::Null, s("new"), false));
        assert!(g.allows(Seen::Null, s("shipped"), false), "any state is an entry point");
        assert!(g.allows(s("new"), s("paid"), false));
        assert!(!g.allows(s("paid"), s("new"), false));
        assert!(
            !g.allows(s("shipped"), s("paid"), false),
            "a state with no edges out is final"
        );
        assert!(g.allows(s("shipped"), s("shipped"), true));
        assert!(!g.allows(s("new"), Seen::Null, false));
        assert!(g.allows(Seen::Null, Seen::Null, true));
        assert!(!g.allows(Seen::Null, s("lost"), false));
        assert!(g.allows(s("lost"), s("lost"), true), "an unknown value kept as it is");
        assert!(g.allows(s("lost"), s("new"), false));
        assert_eq!(g.targets(1), ["cancelled", "paid"]);
    }

    proptest! {
        #[test]
        fn any_graph_allows_exactly_its_edges(
            edges in prop::collection::btree_map("[a-e]", prop::collection::vec("[a-f]", 0..4), 0..5),
            from in prop::option::of("[a-g]"),
            to in prop::option::of("[a-g]"),
        ) {
            let g = StateGraph::new(&edges);
            let named = |v: &String| edges.contains_key(v) || edges.values().any(|t| t.contains(v));
            // The reference: the rule in words, over the names themselves.
            let expected = match (&from, &to) {
                (from, None) => from.is_none(),
                (Some(f), Some(t)) if f == t => true,
                (None, Some(t)) => named(t),
                (Some(f), Some(t)) if !named(f) => named(t),
                (Some(f), Some(t)) => edges.get(f).is_some_and(|targets| targets.contains(t)),
            };
            let seen_from = g.seen(from.as_deref());
            let seen_to = g.seen(to.as_deref());
            prop_assert_eq!(g.allows(seen_from, seen_to, from.is_some() && from == to), expected);
        }
    }
}
