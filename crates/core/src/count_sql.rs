//! The SQL text of count rules: a parent's claimed count, its children's
//! actual count, and the batch count of detection. Names come quoted;
//! operators come schema-qualified from the catalog.
use crate::quote::quote_ident;

/// `a OP b AND ...` for each column pair and operator.
pub fn conjunction(pairs: impl Iterator<Item = (String, String, String)>) -> String {
    pairs
        .map(|(left, op, right)| format!("{left} {op} {right}"))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// `$i` for the i-th key column (from 0).
pub fn param(i: usize) -> String {
    format!("${}", i + 1)
}

/// The parent's claimed count, of the parent row matched by `by_parent`.
pub fn claimed(count_column: &str, parent: &str, by_parent: &str) -> String {
    format!(
        "SELECT p.{}::pg_catalog.int8 FROM {parent} p WHERE {by_parent}",
        quote_ident(count_column)
    )
}

/// The number of child rows matched by `by_child`.
pub fn actual(child: &str, by_child: &str) -> String {
    format!("SELECT pg_catalog.count(*) FROM {child} c WHERE {by_child}")
}

/// The number of child rows of each key, for keys passed as one array per
/// key column, in their order.
pub fn batch_counts(child: &str, fk_columns: &[String], operators: &[String]) -> String {
    let n = fk_columns.len().min(operators.len());
    let names: Vec<String> = (1..=n).map(|i| format!("k{i}")).collect();
    let params: Vec<String> = (1..=n).map(|i| format!("pg_catalog.unnest(${i})")).collect();
    let matches = conjunction((0..n).map(|i| {
        (
            format!("k.{}", names[i]),
            operators[i].clone(),
            format!("c.{}", quote_ident(&fk_columns[i])),
        )
    }));
    format!(
        "SELECT (SELECT pg_catalog.count(*) FROM {child} c WHERE {matches})
           FROM ROWS FROM ({}) WITH ORDINALITY AS k({}, n) ORDER BY k.n",
        params.join(", "),
        names.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts() {
        let eq = "OPERATOR(pg_catalog.=)".to_string();
        let by_parent = conjunction((0..2).map(|i| (format!("p.k{i}"), eq.clone(), param(i))));
        assert_eq!(
            by_parent,
            "p.k0 OPERATOR(pg_catalog.=) $1 AND p.k1 OPERATOR(pg_catalog.=) $2"
        );
        assert_eq!(
            claimed("Items \"n\"", "\"s\".\"t\"", "TRUE"),
            "SELECT p.\"Items \"\"n\"\"\"::pg_catalog.int8 FROM \"s\".\"t\" p WHERE TRUE"
        );
        assert_eq!(actual("\"c\"", "x"), "SELECT pg_catalog.count(*) FROM \"c\" c WHERE x");
        let batch = batch_counts("\"c\"", &["a".into(), "b".into()], &[eq.clone(), eq]);
        assert!(batch.contains("WHERE k.k1 OPERATOR(pg_catalog.=) c.\"a\" AND k.k2 OPERATOR(pg_catalog.=) c.\"b\""));
        assert!(
            batch.contains("ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2)) WITH ORDINALITY AS k(k1, k2, n)")
        );
    }
}
