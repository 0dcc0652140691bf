//! Detection: `invariants.violations()` and `invariants.violating_rows()`.
//! Both use the condition each rule derives from its declaration
//! (`RuleSpec::violation_predicate`), the same one `repair` uses.
use pgrx::pg_sys::Oid;
use pgrx::prelude::*;
use pgrx::{AnyNumeric, JsonB};

use super::Rule;
use crate::catalog::{self, quote_ident, quote_literal, spi, spi_row, table_arg, Regclass, Table};
use crate::errors::{fail, Code, InvariantError};

/// A detectable rule with the SQL condition its violating rows meet.
pub struct Detectable {
    pub table: Table,
    pub rule: Rule,
    pub predicate: String,
}

/// A rule whose columns no longer match the table.
pub struct Broken {
    pub table: Table,
    pub rule: String,
    pub problem: String,
}

/// Splits the rules of `tables` (all when None) into detectable ones, each
/// with its condition, and broken ones; rules about changes are left out.
pub fn detectable(tables: Option<&[Oid]>) -> (Vec<Detectable>, Vec<Broken>) {
    let rules = super::load(tables).unwrap_or_else(|e| e.raise());
    let mut found = Vec::new();
    let mut broken = Vec::new();
    for rule in rules {
        let Some(table) = Table::lookup(rule.tbl) else {
            continue;
        };
        // Over all tables, only those the caller may read (a scheduled
        // repair of one schema must not fail on another's tables).
        if tables.is_none() && !can_select(&table) {
            continue;
        }
        let columns = catalog::columns(table.oid);
        let missing: Vec<&str> = rule
            .spec
            .columns()
            .into_iter()
            .filter(|name| !columns.iter().any(|c| c.name == *name))
            .collect();
        if !missing.is_empty() {
            broken.push(Broken {
                problem: format!(
                    "rule \"{}\" reads column \"{}\", which no longer exists",
                    rule.name,
                    missing.join("\", \"")
                ),
                rule: rule.name,
                table,
            });
            continue;
        }
        let resolve = |name: &str| columns.iter().find(|c| c.name == name).cloned();
        if let Some(predicate) = rule.spec.violation_predicate(resolve) {
            found.push(Detectable { table, rule, predicate });
        }
    }
    (found, broken)
}

fn can_select(table: &Table) -> bool {
    spi(Spi::get_one_with_args::<bool>(
        "SELECT pg_catalog.has_table_privilege($1, 'SELECT')",
        &[table.oid.into()],
    )) == Some(true)
}

/// Counts for one table, from one scan.
pub struct TableCounts {
    pub table: Table,
    pub total: i64,
    /// Rows violating at least one rule.
    pub violating_any: i64,
    /// (rule name, violating rows), in the order of `rules`.
    pub per_rule: Vec<(String, i64)>,
}

/// One scan per table counting every detectable rule's violations.
pub fn count(detectable: &[Detectable]) -> Vec<TableCounts> {
    let mut tables: Vec<&Table> = Vec::new();
    for d in detectable {
        if !tables.iter().any(|t| t.oid == d.table.oid) {
            tables.push(&d.table);
        }
    }
    tables
        .into_iter()
        .map(|table| {
            let rules: Vec<&Detectable> = detectable.iter().filter(|d| d.table.oid == table.oid).collect();
            let per_rule_sql: Vec<String> = rules
                .iter()
                .map(|d| format!("count(*) FILTER (WHERE {})", d.predicate))
                .collect();
            let any = rules
                .iter()
                .map(|d| d.predicate.as_str())
                .collect::<Vec<_>>()
                .join(" OR ");
            let sql = format!(
                "SELECT ARRAY[count(*), count(*) FILTER (WHERE {any}), {}] FROM {} t",
                per_rule_sql.join(", "),
                table.qualified()
            );
            let counts = spi(Spi::get_one::<Vec<i64>>(&sql)).unwrap_or_default();
            let at = |i: usize| counts.get(i).copied().unwrap_or(0);
            TableCounts {
                table: table.clone(),
                total: at(0),
                violating_any: at(1),
                per_rule: rules
                    .iter()
                    .enumerate()
                    .map(|(i, d)| (d.rule.name.clone(), at(i + 2)))
                    .collect(),
            }
        })
        .collect()
}

pub fn percent(part: i64, whole: i64) -> AnyNumeric {
    let value = if whole == 0 {
        0.0
    } else {
        (part as f64) * 100.0 / (whole as f64)
    };
    let rounded = format!("{:.2}", value);
    rounded.parse::<AnyNumeric>().unwrap_or_default()
}

/// One row per detectable rule: how many rows violate it, of how many.
#[pg_extern(schema = "invariants")]
#[allow(clippy::type_complexity)]
fn violations(
    tbl: default!(Option<Regclass>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(tbl, Regclass),
        name!(rule, String),
        name!(violating, i64),
        name!(total, i64),
        name!(pct, AnyNumeric),
    ),
> {
    let tables = tbl.map(|t| vec![table_arg(Some(t), "tbl").oid]);
    let (detectable, _) = detectable(tables.as_deref());
    let rows: Vec<_> = count(&detectable)
        .into_iter()
        .flat_map(|counts| {
            let (oid, total) = (counts.table.oid, counts.total);
            counts
                .per_rule
                .into_iter()
                .map(move |(rule, violating)| (Regclass(oid), rule, violating, total, percent(violating, total)))
        })
        .collect();
    TableIterator::new(rows)
}

/// The keys of up to `lim` rows violating `rule` (every detectable rule of
/// the table when NULL).
#[pg_extern(schema = "invariants")]
fn violating_rows(
    tbl: Option<Regclass>,
    rule: default!(Option<&str>, "NULL"),
    lim: default!(Option<i64>, "100"),
) -> TableIterator<'static, (name!(tbl, Regclass), name!(rule, String), name!(key, JsonB))> {
    let table = table_arg(tbl, "tbl");
    let lim = match lim {
        None => fail(Code::ERRCODE_NULL_VALUE_NOT_ALLOWED, "argument lim must not be NULL"),
        Some(lim) if lim < 0 => fail(
            Code::ERRCODE_INVALID_PARAMETER_VALUE,
            "argument lim must not be negative",
        ),
        Some(lim) => lim,
    };
    let (detectable, broken) = detectable(Some(&[table.oid]));
    if let Some(rule) = rule {
        if let Some(b) = broken.iter().find(|b| b.rule == rule) {
            InvariantError::new(Code::ERRCODE_UNDEFINED_COLUMN, b.problem.clone()).raise();
        }
        if !detectable.iter().any(|d| d.rule.name == rule) {
            rule_not_detectable(&table, rule);
        }
    }
    let key_sql = key_expression(&table);
    let mut rows = Vec::new();
    for d in detectable.iter().filter(|d| rule.is_none_or(|r| r == d.rule.name)) {
        let sql = format!(
            "SELECT {key_sql} FROM {} t WHERE {} ORDER BY 1::text LIMIT $1",
            table.qualified(),
            d.predicate
        );
        let keys: Vec<JsonB> = Spi::connect(|client| {
            let result = spi(client.select(&sql, None, &[lim.into()]));
            result.filter_map(|row| spi(row.get::<JsonB>(1))).collect()
        });
        rows.extend(
            keys.into_iter()
                .map(|key| (Regclass(table.oid), d.rule.name.clone(), key)),
        );
    }
    TableIterator::new(rows)
}

/// A jsonb object of the row's key columns, or its physical address when
/// the table has no key.
pub fn key_expression(table: &Table) -> String {
    let key = catalog::key_columns(table.oid);
    if key.is_empty() {
        return "pg_catalog.jsonb_build_object('tableoid', t.tableoid::regclass::text, 'ctid', t.ctid::text)".into();
    }
    let pairs: Vec<String> = key
        .iter()
        .map(|name| format!("{}, t.{}", quote_literal(name), quote_ident(name)))
        .collect();
    format!("pg_catalog.jsonb_build_object({})", pairs.join(", "))
}

/// Raises the error for a rule that does not exist or cannot be detected.
pub fn rule_not_detectable(table: &Table, rule: &str) -> ! {
    let kind = spi_row(Spi::get_one_with_args::<String>(
        "SELECT kind FROM invariants.rule_definitions WHERE tbl = $1 AND name = $2",
        &[Regclass(table.oid).into(), rule.into()],
    ))
    .flatten();
    match kind {
        None => InvariantError::new(
            Code::ERRCODE_UNDEFINED_OBJECT,
            format!(
                "argument rule: rule \"{rule}\" of table {} does not exist",
                table.display()
            ),
        )
        .hint("SELECT name FROM invariants.rules lists the declared rules.")
        .raise(),
        Some(kind) => InvariantError::new(
            Code::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("argument rule: rule \"{rule}\" ({kind}) is about changes, so no stored row can violate it"),
        )
        .hint("Only require_not_null, require_on_set and allow_transitions rules are detected in stored rows.")
        .raise(),
    }
}
