//! The order in which restore puts rows back: a table after every table it
//! references, so that foreign keys hold as rows return.

/// A parents-first order of `n` tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ordering {
    /// Every table, each once: parents before their children. Tables on a
    /// cycle come in their input order, once no table outside the cycle
    /// can come first.
    pub order: Vec<usize>,
    /// The tables on a cycle of references (a table referencing itself is
    /// not one): their order cannot satisfy every foreign key, only
    /// deferred checks can.
    pub on_cycle: Vec<usize>,
}

/// Orders tables `0..n` so that a table comes after every table it
/// references; `references(child, parent)` says whether it does.
pub fn parents_first(n: usize, references: impl Fn(usize, usize) -> bool) -> Ordering {
    let parents: Vec<Vec<usize>> = (0..n)
        .map(|child| (0..n).filter(|&p| p != child && references(child, p)).collect())
        .collect();
    let mut placed = vec![false; n];
    let mut order = Vec::with_capacity(n);
    let mut on_cycle = Vec::new();
    while order.len() < n {
        let ready = (0..n).find(|&i| !placed[i] && parents[i].iter().all(|&p| placed[p]));
        let next = match ready {
            Some(i) => i,
            None => {
                // Every table left waits for another one left: the first
                // of them that is on a cycle goes next.
                let i = (0..n)
                    .find(|&i| !placed[i] && reaches(&parents, &placed, i, i))
                    .or_else(|| (0..n).find(|&i| !placed[i]))
                    .unwrap_or_default();
                on_cycle.push(i);
                i
            }
        };
        placed[next] = true;
        order.push(next);
    }
    for i in 0..n {
        if !on_cycle.contains(&i) && reaches(&parents, &vec![false; n], i, i) {
            on_cycle.push(i);
        }
    }
    on_cycle.sort_unstable();
    Ordering { order, on_cycle }
}

/// True when `target` is reached from `from` by following references
/// through tables not yet placed.
fn reaches(parents: &[Vec<usize>], placed: &[bool], from: usize, target: usize) -> bool {
    let mut seen = vec![false; parents.len()];
    let mut stack: Vec<usize> = parents[from].iter().copied().filter(|&p| !placed[p]).collect();
    while let Some(table) = stack.pop() {
        if table == target {
            return true;
        }
        if !std::mem::replace(&mut seen[table], true) {
            stack.extend(parents[table].iter().copied().filter(|&p| !placed[p]));
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn order_of(n: usize, edges: &[(usize, usize)]) -> Ordering {
        parents_first(n, |child, parent| edges.contains(&(child, parent)))
    }

    #[test]
    fn parents_come_first() {
        // 0 references 1, 1 references 2.
        assert_eq!(
            order_of(3, &[(0, 1), (1, 2)]),
            Ordering {
                order: vec![2, 1, 0],
                on_cycle: vec![]
            }
        );
        // A self-reference is no cycle.
        assert_eq!(
            order_of(2, &[(0, 0), (0, 1)]),
            Ordering {
                order: vec![1, 0],
                on_cycle: vec![]
            }
        );
        assert_eq!(order_of(0, &[]).order, Vec::<usize>::new());
    }

    #[test]
    fn a_cycle_is_reported_and_everything_still_placed() {
        // 0 <-> 1, and 2 references 0.
        let ordering = order_of(4, &[(0, 1), (1, 0), (2, 0), (3, 3)]);
        assert_eq!(ordering.on_cycle, [0, 1]);
        let mut all = ordering.order.clone();
        all.sort_unstable();
        assert_eq!(all, [0, 1, 2, 3]);
        let position = |t: usize| ordering.order.iter().position(|&o| o == t);
        assert!(position(2) > position(0) && position(2) > position(1));
    }

    proptest! {
        #[test]
        fn every_parent_comes_before_its_children_in_a_dag(
            n in 0usize..12,
            picks in prop::collection::vec((0usize..12, 0usize..12), 0..40),
        ) {
            // Edges from a higher number to a lower one: never a cycle.
            let edges: Vec<(usize, usize)> = picks
                .into_iter()
                .filter(|&(a, b)| a < n && b < n && a != b)
                .map(|(a, b)| (a.max(b), a.min(b)))
                .collect();
            // Shuffle the numbering so that input order does not help.
            let relabel = |t: usize| (t * 7 + 3) % n.max(1);
            let edges: Vec<(usize, usize)> = if n > 0 && n % 7 != 0 {
                edges.into_iter().map(|(a, b)| (relabel(a), relabel(b))).collect()
            } else {
                edges
            };
            let ordering = order_of(n, &edges);
            prop_assert!(ordering.on_cycle.is_empty());
            let mut all = ordering.order.clone();
            all.sort_unstable();
            prop_assert_eq!(all, (0..n).collect::<Vec<_>>());
            let position = |t: usize| ordering.order.iter().position(|&o| o == t);
            for (child, parent) in edges {
                prop_assert!(position(parent) < position(child), "{parent} after {child}");
            }
        }

        #[test]
        fn any_graph_places_every_table_once(
            n in 0usize..8,
            picks in prop::collection::vec((0usize..8, 0usize..8), 0..20),
        ) {
            let edges: Vec<(usize, usize)> = picks.into_iter().filter(|&(a, b)| a < n && b < n).collect();
            let ordering = order_of(n, &edges);
            let mut all = ordering.order.clone();
            all.sort_unstable();
            prop_assert_eq!(all, (0..n).collect::<Vec<_>>());
            // A table off every cycle still follows its parents off cycles.
            let position = |t: usize| ordering.order.iter().position(|&o| o == t);
            for &(child, parent) in &edges {
                if child != parent && !ordering.on_cycle.contains(&child) && !ordering.on_cycle.contains(&parent) {
                    prop_assert!(position(parent) < position(child));
                }
            }
        }
    }
}
