//! Detection: `invariants.violations()` and `invariants.violating_rows()`.
//!
//! Row rules use the condition each derives from its declaration
//! (`RuleSpec::violation_predicate`), the same one `repair` uses. Count
//! rules compare each parent's claim with its children batch by batch: the
//! parent is read as its owner, the child as its owner, and only keys cross
//! between the two (as Postgres' own foreign-key checks do it).
use pgrx::pg_sys::{self, Oid};
use pgrx::prelude::*;
use pgrx::{AnyNumeric, FromDatum, JsonB};

use super::require_count::{count_check, CountCheck};
use super::spec::{Params, RuleSpec};
use super::Rule;
use crate::catalog::{self, quote_ident, quote_literal, spi, Column, Regclass, Table, Value};
use crate::errors::{fail, Code, InvariantError};
use crate::privilege::{as_table_owner, pinned};

/// A rule that stored rows can break, resolved against its table.
pub struct Detectable {
    pub table: Table,
    pub rule: Rule,
    columns: Vec<Column>,
    count: Option<CountCheck>,
}

impl Detectable {
    /// The condition on a row `t` its violating rows meet (row rules only).
    pub fn predicate(&self, params: &mut Params) -> Option<String> {
        let resolve = |name: &str| self.columns.iter().find(|c| c.name == name).cloned();
        super::spec::violation_predicate(&self.rule.spec, &self.table, resolve, params)
    }
}

/// A rule whose columns no longer match the table.
pub struct Broken {
    pub table: Table,
    pub rule: String,
    pub problem: String,
}

/// Splits the rules of `tables` (all when None) into detectable ones and
/// broken ones; rules about changes are left out. Over all tables, only
/// those the caller may read (see [`readable`]).
pub fn detectable(tables: Option<&[Oid]>) -> (Vec<Detectable>, Vec<Broken>) {
    let rules = super::load(tables).unwrap_or_else(|e| e.raise());
    let mut found = Vec::new();
    let mut broken = Vec::new();
    for rule in rules {
        let Some(table) = Table::lookup(rule.tbl) else {
            continue;
        };
        if tables.is_none() && readable(&table).is_err() {
            continue;
        }
        let columns = catalog::columns(table.oid);
        let missing: Vec<&str> = rule
            .spec
            .columns()
            .into_iter()
            .filter(|name| !columns.iter().any(|c| c.name == *name))
            .collect();
        let problem = if !missing.is_empty() {
            Some(format!(
                "rule \"{}\" reads column \"{}\", which no longer exists",
                rule.name,
                missing.join("\", \"")
            ))
        } else {
            None
        };
        let count = match (&rule.spec, &problem) {
            (RuleSpec::RequireCount(spec), None) => match count_check(&table, &rule.name, spec) {
                Ok(check) => Some(check),
                Err(problem) => {
                    broken.push(Broken {
                        table,
                        rule: rule.name,
                        problem,
                    });
                    continue;
                }
            },
            _ => None,
        };
        if let Some(problem) = problem {
            broken.push(Broken {
                table,
                rule: rule.name,
                problem,
            });
            continue;
        }
        let d = Detectable {
            table,
            rule,
            columns,
            count,
        };
        if d.count.is_some() || d.predicate(&mut Params::default()).is_some() {
            found.push(d);
        }
    }
    (found, broken)
}

/// Whether the caller may see what detection finds in `table`: it needs
/// SELECT on it, and row-level security must not hide rows from it
/// (detection reads every row, as the table's owner).
pub fn readable(table: &Table) -> Result<(), InvariantError> {
    let (select, hidden) = crate::sql::two::<bool, bool>(
        "SELECT pg_catalog.has_table_privilege($1, 'SELECT'), pg_catalog.row_security_active($1)",
        &[table.oid.into()],
    );
    if select != Some(true) {
        return Err(InvariantError::new(
            Code::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("permission denied for table {}", table.display()),
        )
        .hint("Detection needs SELECT on the table.")
        .table(&table.schema, &table.name));
    }
    if hidden == Some(true) {
        return Err(InvariantError::new(
            Code::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!(
                "row-level security hides rows of {} from the current user",
                table.display()
            ),
        )
        .detail("Detection reads every row as the table's owner, so it would report rows the policies hide.")
        .hint("Ask the table's owner (or a role with BYPASSRLS) to run it.")
        .table(&table.schema, &table.name));
    }
    Ok(())
}

/// Validates a `regclass` argument of a detection function: an existing
/// table the caller may read (see [`readable`]).
pub fn readable_table_arg(tbl: Option<Regclass>, arg: &str) -> Table {
    let table = catalog::existing_table_arg(tbl, arg);
    readable(&table).unwrap_or_else(|e| e.raise());
    table
}

/// Counts for one table.
pub struct TableCounts {
    pub table: Table,
    pub total: i64,
    /// Rows violating at least one rule.
    pub violating_any: i64,
    /// (rule name, violating rows), in the order of the rules given.
    pub per_rule: Vec<(String, i64)>,
}

/// Counts every detectable rule's violations, table by table, each table
/// read as its owner.
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
            let mut counts = TableCounts {
                table: table.clone(),
                total: 0,
                violating_any: 0,
                per_rule: rules.iter().map(|d| (d.rule.name.clone(), 0)).collect(),
            };
            if rules.iter().any(|d| d.count.is_some()) {
                scan(table, &rules, None, |_, flags| {
                    counts.total += 1;
                    if flags.iter().any(|f| *f) {
                        counts.violating_any += 1;
                    }
                    for (i, flag) in flags.iter().enumerate() {
                        counts.per_rule[i].1 += i64::from(*flag);
                    }
                    true
                });
            } else {
                let mut params = Params::default();
                let predicates: Vec<String> = rules.iter().filter_map(|d| d.predicate(&mut params)).collect();
                let per_rule_sql: Vec<String> = predicates
                    .iter()
                    .map(|p| format!("count(*) FILTER (WHERE {p})"))
                    .collect();
                let sql = format!(
                    "SELECT ARRAY[count(*), count(*) FILTER (WHERE {}), {}] FROM {} t",
                    predicates.join(" OR "),
                    per_rule_sql.join(", "),
                    table.qualified()
                );
                let args = params.args();
                let numbers =
                    as_table_owner(table.oid, || crate::sql::one::<Vec<i64>>(&sql, &args)).unwrap_or_default();
                let at = |i: usize| numbers.get(i).copied().unwrap_or(0);
                counts.total = at(0);
                counts.violating_any = at(1);
                for (i, entry) in counts.per_rule.iter_mut().enumerate() {
                    entry.1 = at(i + 2);
                }
            }
            counts
        })
        .collect()
}

/// Rows read per batch when count rules are checked.
const BATCH: i64 = 10_000;

/// Reads every row of `table` in key order (as its owner), with one flag
/// per rule of `rules`: does the row break it? Count rules ask the child
/// (as its owner) for the batch's counts. `f` gets each row's key (as
/// jsonb, when `key_sql` is given) and flags, and returns false to stop.
fn scan(
    table: &Table,
    rules: &[&Detectable],
    key_sql: Option<&str>,
    mut f: impl FnMut(Option<JsonB>, &[bool]) -> bool,
) {
    let mut params = Params::default();
    let mut select = vec![key_sql.unwrap_or("NULL::pg_catalog.jsonb").to_string()];
    for d in rules {
        match &d.count {
            Some(check) => {
                select.push(format!("t.{}::pg_catalog.int8", quote_ident(&check.count_column)));
                select.extend(check.parent_columns.iter().map(|c| format!("t.{}", quote_ident(c))));
            }
            None => select.push(d.predicate(&mut params).unwrap_or_else(|| "false".into())),
        }
    }
    let sql = format!(
        "SELECT {} FROM {} t ORDER BY {}",
        select.join(", "),
        table.qualified(),
        order_by(table)
    );
    let args = params.args();
    let query = std::ffi::CString::new(sql).unwrap_or_default();
    let (mut types, mut values, nulls) = catalog::raw_args(&args);
    Spi::connect(|_client| {
        // SAFETY: inside an SPI connection; the argument arrays have one
        // entry per argument. Each fetched batch is read through the tuple
        // table SPI returned, as the owner, and freed before the next; the
        // cursor is closed on every path out of the loop.
        unsafe {
            let portal = as_table_owner(table.oid, || {
                pg_sys::SPI_cursor_open_with_args(
                    std::ptr::null(),
                    query.as_ptr(),
                    types.len() as i32,
                    types.as_mut_ptr(),
                    values.as_mut_ptr(),
                    nulls.as_ptr(),
                    true,
                    0,
                )
            });
            loop {
                as_table_owner(table.oid, || pg_sys::SPI_cursor_fetch(portal, true, BATCH));
                let table_rows = pg_sys::SPI_tuptable;
                let fetched = pg_sys::SPI_processed as usize;
                if fetched == 0 || table_rows.is_null() {
                    break;
                }
                let desc = (*table_rows).tupdesc;
                let value = |row: usize, column: i32| -> Value {
                    let mut is_null = false;
                    let tuple = *(*table_rows).vals.add(row);
                    let datum = pg_sys::SPI_getbinval(tuple, desc, column, &mut is_null);
                    Value {
                        datum: (!is_null).then_some(datum),
                        type_oid: pg_sys::SPI_gettypeid(desc, column),
                    }
                };
                // Per rule, per row: broken? Count rules are answered per batch.
                let mut flags: Vec<Vec<bool>> = Vec::with_capacity(rules.len());
                let mut column = 2;
                for d in rules {
                    match &d.count {
                        Some(check) => {
                            let width = 1 + check.parent_columns.len() as i32;
                            let claims: Vec<Option<i64>> = (0..fetched)
                                .map(|r| value(r, column).datum.map(|d| d.value() as i64))
                                .collect();
                            let keys: Vec<Vec<Value>> = (0..fetched)
                                .map(|r| (1..width).map(|i| value(r, column + i)).collect())
                                .collect();
                            let actual = check.child_counts(&keys);
                            flags.push(
                                claims
                                    .iter()
                                    .zip(&actual)
                                    .map(|(claim, actual)| *claim != Some(*actual))
                                    .collect(),
                            );
                            column += width;
                        }
                        None => {
                            flags.push(
                                (0..fetched)
                                    .map(|r| value(r, column).datum.is_some_and(|d| d.value() != 0))
                                    .collect(),
                            );
                            column += 1;
                        }
                    }
                }
                let mut go_on = true;
                for row in 0..fetched {
                    let key = key_sql.and_then(|_| {
                        value(row, 1)
                            .datum
                            .and_then(|d| JsonB::from_polymorphic_datum(d, false, pg_sys::JSONBOID))
                    });
                    let row_flags: Vec<bool> = flags.iter().map(|f| f[row]).collect();
                    if !f(key, &row_flags) {
                        go_on = false;
                        break;
                    }
                }
                pg_sys::SPI_freetuptable(table_rows);
                if !go_on {
                    break;
                }
            }
            pg_sys::SPI_cursor_close(portal);
        }
    });
}

/// The columns that order a table's rows: its key, else the row address.
fn order_by(table: &Table) -> String {
    let key = catalog::key_columns(table.oid);
    if key.is_empty() {
        return "t.tableoid, t.ctid".into();
    }
    key.iter()
        .map(|c| format!("t.{}", quote_ident(c)))
        .collect::<Vec<_>>()
        .join(", ")
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
    pinned(|| {
        let tables = tbl.map(|t| vec![readable_table_arg(Some(t), "tbl").oid]);
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
    })
}

/// The keys of the first `lim` rows (in key order) violating `rule`
/// (every detectable rule of the table when NULL).
#[pg_extern(schema = "invariants")]
fn violating_rows(
    tbl: Option<Regclass>,
    rule: default!(Option<&str>, "NULL"),
    lim: default!(Option<i64>, "100"),
) -> TableIterator<'static, (name!(tbl, Regclass), name!(rule, String), name!(key, JsonB))> {
    pinned(|| {
        let table = readable_table_arg(tbl, "tbl");
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
            let keys: Vec<JsonB> = if d.count.is_some() {
                let mut keys = Vec::new();
                if lim > 0 {
                    scan(&table, &[d], Some(&key_sql), |key, flags| {
                        if flags[0] {
                            keys.extend(key);
                        }
                        (keys.len() as i64) < lim
                    });
                }
                keys
            } else {
                let mut params = Params::default();
                let predicate = d.predicate(&mut params).unwrap_or_else(|| "false".into());
                let limit = params.push(Value {
                    datum: Some(pg_sys::Datum::from(lim)),
                    type_oid: pg_sys::INT8OID,
                });
                let sql = format!(
                    "SELECT {key_sql} FROM {} t WHERE {predicate} ORDER BY {} LIMIT {limit}",
                    table.qualified(),
                    order_by(&table)
                );
                let args = params.args();
                as_table_owner(table.oid, || {
                    Spi::connect(|client| {
                        let result = spi(client.select(&sql, None, &args));
                        result.filter_map(|row| spi(row.get::<JsonB>(1))).collect()
                    })
                })
            };
            rows.extend(
                keys.into_iter()
                    .map(|key| (Regclass(table.oid), d.rule.name.clone(), key)),
            );
        }
        TableIterator::new(rows)
    })
}

/// A jsonb object of the row's key columns, or its physical address when
/// the table has no key.
pub fn key_expression(table: &Table) -> String {
    let key = catalog::key_columns(table.oid);
    if key.is_empty() {
        return "pg_catalog.jsonb_build_object('tableoid', t.tableoid::pg_catalog.regclass::pg_catalog.text, 'ctid', t.ctid::pg_catalog.text)".into();
    }
    let pairs: Vec<String> = key
        .iter()
        .map(|name| format!("{}, t.{}", quote_literal(name), quote_ident(name)))
        .collect();
    format!("pg_catalog.jsonb_build_object({})", pairs.join(", "))
}

/// Raises the error for a rule that does not exist or cannot be detected.
pub fn rule_not_detectable(table: &Table, rule: &str) -> ! {
    let kind = crate::sql::one::<String>(
        "SELECT kind FROM invariants.rule_definitions WHERE tbl = $1 AND name = $2",
        &[Regclass(table.oid).into(), rule.into()],
    );
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
        .hint("Only require_not_null, require_on_set, allow_transitions and require_count rules are detected in stored rows.")
        .raise(),
    }
}
