//! The rule declarations stored in `invariants.rule_definitions.spec`:
//! their types and parsing are in `pg_invariants_core::spec`; here they are
//! checked against the table and completed before they are stored, and
//! turned into SQL conditions with typed arguments.
use std::collections::BTreeMap;

use super::values;
use crate::catalog::{column_arg, equality_operator, qualified_operator, Column, Table, Value};
use crate::errors::{Code, InvariantError};

pub use pg_invariants_core::spec::*;

fn bad_spec(message: impl Into<String>) -> InvariantError {
    InvariantError::new(Code::ERRCODE_INVALID_PARAMETER_VALUE, message)
}

/// A SQL condition on a row `t` of `table`, true for the rows that break
/// `spec` as they stand (see `RuleSpec::violation_predicate`). Values are
/// compared in the column's type, passed as arguments added to `params`.
/// `resolve` maps a column name to its column.
pub fn violation_predicate(
    spec: &RuleSpec,
    table: &Table,
    resolve: impl Fn(&str) -> Option<Column>,
    params: &mut Params,
) -> Option<String> {
    spec.violation_predicate(|column, values| {
        let col = resolve(column)?;
        let operator = equality_operator(col.type_oid).and_then(qualified_operator)?;
        let placeholders: Vec<String> = values::typed(table, &col, values)
            .into_iter()
            .map(|value| params.push(value))
            .collect();
        Some(in_list_sql(&col.name, &operator, &placeholders))
    })
}

/// Checks the rule against `table` and completes it: columns exist and
/// are not generated (BEFORE triggers see generated columns before
/// they are computed), values are valid for their columns and stored in
/// their canonical text, lists are not empty, the repair is well formed.
pub fn complete(spec: RuleSpec, table: &Table) -> Result<RuleSpec, InvariantError> {
    if let Some(message) = spec.message() {
        if message.trim().is_empty() {
            return Err(bad_spec("argument message must not be empty"));
        }
    }
    let spec = match spec {
        RuleSpec::RequireNotNull(mut s) => {
            rule_column(table, &s.column, "column")?;
            let when = rule_column(table, &s.when_column, "when_column")?;
            non_empty(&s.when_values, "when_values")?;
            s.when_values = dedup(values::canonical(table, &when, &s.when_values, "when_values")?);
            s.repair = s.repair.map(|r| complete_repair(table, r)).transpose()?;
            RuleSpec::RequireNotNull(s)
        }
        RuleSpec::RequireOnSet(mut s) => {
            let column = rule_column(table, &s.column, "column")?;
            rule_column(table, &s.when_column, "when_column")?;
            non_empty(&s.allowed, "allowed")?;
            s.allowed = dedup(values::canonical(table, &column, &s.allowed, "allowed")?);
            s.repair = s.repair.map(|r| complete_repair(table, r)).transpose()?;
            RuleSpec::RequireOnSet(s)
        }
        RuleSpec::WriteOnce(s) => {
            let column = rule_column(table, &s.column, "column")?;
            if s.mode == WriteOnceMode::Immutable {
                values::comparable(table, &column, "column")?;
            }
            RuleSpec::WriteOnce(s)
        }
        // Checked, and completed, by require_count::complete.
        RuleSpec::RequireCount(s) => RuleSpec::RequireCount(s),
        RuleSpec::AllowTransitions(mut s) => {
            let column = rule_column(table, &s.column, "column")?;
            if s.graph.is_empty() {
                return Err(bad_spec("argument graph must name at least one state")
                    .hint("Pass an object such as {\"pending\": [\"sent\"], \"sent\": []}."));
            }
            let mut graph: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (from, to) in &s.graph {
                let from = values::canonical(table, &column, std::slice::from_ref(from), "graph")?;
                let to = values::canonical(table, &column, to, "graph")?;
                let targets = graph.entry(from.into_iter().next().unwrap_or_default()).or_default();
                targets.extend(to);
                *targets = dedup(std::mem::take(targets));
            }
            s.graph = graph;
            s.repair = s.repair.map(|r| complete_repair(table, r)).transpose()?;
            RuleSpec::AllowTransitions(s)
        }
    };
    Ok(spec)
}

/// A column a row rule reads: it must exist and not be a generated column.
fn rule_column(table: &Table, name: &str, arg: &str) -> Result<Column, InvariantError> {
    let column = column_arg(table, name, arg);
    if column.generated {
        return Err(InvariantError::new(
            Code::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!(
                "argument {arg}: column \"{name}\" of table {} is a generated column",
                table.display()
            ),
        )
        .detail("Rules are checked before a row is stored, when its generated columns are not computed yet.")
        .hint("Declare the rule on the columns the generated column is computed from."));
    }
    Ok(column)
}

/// Arguments of a generated query, in order: `push` returns the placeholder.
#[derive(Default)]
pub struct Params(pub Vec<Value>);

impl Params {
    pub fn push(&mut self, value: Value) -> String {
        self.0.push(value);
        format!("${}", self.0.len())
    }

    pub fn args(&self) -> Vec<pgrx::datum::DatumWithOid<'static>> {
        self.0.iter().map(Value::arg).collect()
    }
}

fn non_empty(values: &[String], arg: &str) -> Result<(), InvariantError> {
    if values.is_empty() {
        return Err(bad_spec(format!("argument {arg} must not be empty")).hint("List at least one value."));
    }
    Ok(())
}

/// Checks a repair against `table` and stores its values in their
/// canonical text.
fn complete_repair(table: &Table, mut repair: Repair) -> Result<Repair, InvariantError> {
    if repair.set.is_empty() && repair.touch.is_empty() {
        return Err(bad_spec("argument repair: \"set\" must name at least one column")
            .hint("For example {\"set\": {\"status\": \"pending\"}}."));
    }
    for (name, value) in repair.set.iter_mut() {
        let column = column_arg(table, name, "repair.set");
        if column.generated {
            return Err(InvariantError::new(
                Code::ERRCODE_GENERATED_ALWAYS,
                format!("argument repair.set: column \"{name}\" is a generated column and cannot be set"),
            ));
        }
        if let Some(text) = repair_value_text(value)? {
            let canonical = values::canonical(table, &column, &[text], "repair.set")?;
            *value = serde_json::Value::String(canonical.into_iter().next().unwrap_or_default());
        }
    }
    for name in &repair.touch {
        let column = column_arg(table, name, "repair.touch");
        let timestamp_types = [
            pgrx::pg_sys::TIMESTAMPTZOID,
            pgrx::pg_sys::TIMESTAMPOID,
            pgrx::pg_sys::DATEOID,
        ];
        if !timestamp_types.contains(&column.type_oid) {
            return Err(InvariantError::new(
                Code::ERRCODE_DATATYPE_MISMATCH,
                format!(
                    "argument repair.touch: column \"{}\" is of type {}, not a timestamp or date",
                    column.name, column.type_name
                ),
            ));
        }
    }
    if let Some(group_by) = &repair.group_by {
        column_arg(table, group_by, "repair.group_by");
    }
    Ok(repair)
}
