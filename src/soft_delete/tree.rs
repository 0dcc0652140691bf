//! Sets of rows along a soft-delete cascade, for `purge` and `undelete`.
//!
//! Each set is read, and changed, as its own table's owner. A child set is
//! named by the keys of its parent set, passed as arrays: no query ever
//! reads two users' tables, as Postgres' own ON DELETE CASCADE runs.
use pgrx::prelude::*;

use crate::catalog::{first_row, quote_ident, spi, CascadeKey, Table, Value};
use crate::privilege::as_table_owner;

/// The rows of `table` (aliased `t`) meeting `condition`, which may name
/// the `USING` item `using` and the arguments `$1`, `$2`, ...
pub struct RowSet {
    pub table: Table,
    using: Option<String>,
    condition: String,
    args: Vec<Value>,
}

impl RowSet {
    /// The rows of `table` meeting `condition` with `args`.
    pub fn new(table: &Table, condition: String, args: Vec<Value>) -> RowSet {
        RowSet {
            table: table.clone(),
            using: None,
            condition,
            args,
        }
    }

    fn from(&self) -> String {
        match &self.using {
            Some(using) => format!("{} t, {using}", self.table.qualified()),
            None => format!("{} t", self.table.qualified()),
        }
    }

    fn arguments(&self) -> Vec<pgrx::datum::DatumWithOid<'static>> {
        self.args.iter().map(Value::arg).collect()
    }

    /// Copies the set's rows to the audit log as an `op` capture, locking
    /// them for what follows; returns how many.
    pub fn capture(&self, op: &'static str) -> usize {
        let sql = format!(
            "SELECT t.* FROM {} WHERE {} FOR UPDATE OF t",
            self.from(),
            self.condition
        );
        crate::audit_log::capture(op, &self.table, &sql, &self.arguments(), None, &Default::default())
    }

    /// One value of `what` (an aggregate over the set), as the owner.
    pub fn aggregate(&self, what: &str) -> Vec<Value> {
        let sql = format!("SELECT {what} FROM {} WHERE {}", self.from(), self.condition);
        as_table_owner(self.table.oid, || first_row(&sql, &self.arguments()))
    }

    /// How many rows of the set also meet `extra`.
    pub fn count_where(&self, extra: &str) -> i64 {
        let sql = format!(
            "SELECT count(*) FROM {} WHERE {} AND {extra}",
            self.from(),
            self.condition
        );
        let args = self.arguments();
        as_table_owner(self.table.oid, || crate::sql::one::<i64>(&sql, &args)).unwrap_or(0)
    }

    /// Runs `DELETE` or `UPDATE ... SET` (`verb`) on the set, as the
    /// owner, returning `returning` of each row changed.
    pub fn change<T: FromDatum + IntoDatum>(&self, verb: &str, returning: &str) -> Vec<T> {
        let using = match (&self.using, verb.starts_with("DELETE")) {
            (Some(using), true) => format!(" USING {using}"),
            (Some(using), false) => format!(" FROM {using}"),
            (None, _) => String::new(),
        };
        let sql = match verb.strip_prefix("DELETE") {
            Some(_) => format!(
                "DELETE FROM {} t{using} WHERE {} RETURNING {returning}",
                self.table.qualified(),
                self.condition
            ),
            None => format!(
                "UPDATE {} t {verb}{using} WHERE {} RETURNING {returning}",
                self.table.qualified(),
                self.condition
            ),
        };
        let args = self.arguments();
        as_table_owner(self.table.oid, || {
            Spi::connect_mut(|client| {
                let rows = spi(client.update(&sql, None, &args));
                rows.filter_map(|row| spi(row.get::<T>(1))).collect()
            })
        })
    }

    /// The rows of `key.child` that reference rows of this set through
    /// `key`, and meet `extra` (on the child `t` and the parent's key row
    /// `k`, whose column `k.x{i}` holds `also[i]` of the parent row). The
    /// parent's keys are read now.
    pub fn children(&self, key: &CascadeKey, also: &[&str], extra: &str) -> Option<RowSet> {
        let aggregates = key
            .parent_columns
            .iter()
            .map(|c| format!("t.{}", quote_ident(c)))
            .chain(also.iter().map(|a| a.to_string()))
            .map(|e| format!("pg_catalog.array_agg({e})"))
            .collect::<Vec<_>>()
            .join(", ");
        let arrays = self.aggregate(&aggregates);
        // No parent row: no child row.
        if arrays.is_empty() || arrays.iter().any(|a| a.datum.is_none()) {
            return None;
        }
        let names: Vec<String> = (1..=key.parent_columns.len())
            .map(|i| format!("k{i}"))
            .chain((0..also.len()).map(|i| format!("x{i}")))
            .collect();
        let params: Vec<String> = (1..=arrays.len()).map(|i| format!("pg_catalog.unnest(${i})")).collect();
        let matches = key
            .child_columns
            .iter()
            .zip(&key.equality)
            .enumerate()
            .map(|(i, (c, op))| format!("k.k{} {op} t.{}", i + 1, quote_ident(c)))
            .collect::<Vec<_>>()
            .join(" AND ");
        Some(RowSet {
            table: key.child.clone(),
            using: Some(format!("ROWS FROM ({}) AS k({})", params.join(", "), names.join(", "))),
            condition: format!("{matches} AND {extra}"),
            args: arrays,
        })
    }
}
