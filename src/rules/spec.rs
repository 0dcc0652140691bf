//! The rule declarations stored in `invariants.rule_definitions.spec`,
//! parsed with serde and validated against the table before they are stored.
use std::collections::BTreeMap;

use pgrx::prelude::*;
use serde::{Deserialize, Serialize};

use crate::catalog::{column_arg, quote_ident, quote_literal, spi, Column, Table};
use crate::errors::{Code, InvariantError};

/// Rule kinds, as named by `invariants.add_rule(.., kind, ..)`.
pub const KINDS: [&str; 5] = [
    "require_not_null",
    "require_on_set",
    "write_once",
    "allow_transitions",
    "require_count",
];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequireNotNull {
    /// Must not be NULL ...
    pub column: String,
    /// ... while this column holds one of `when_values`.
    pub when_column: String,
    pub when_values: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repair: Option<Repair>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequireOnSet {
    /// Must hold one of `allowed` ...
    pub column: String,
    /// ... once this column is set (not NULL).
    pub when_column: String,
    pub allowed: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repair: Option<Repair>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WriteOnceMode {
    /// Once set, may change but never return to NULL.
    #[default]
    NoClear,
    /// Once set, never changes again.
    Immutable,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteOnce {
    pub column: String,
    #[serde(default)]
    pub mode: WriteOnceMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowTransitions {
    pub column: String,
    /// From each state, the states it may change to.
    pub graph: BTreeMap<String, Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repair: Option<Repair>,
}

impl AllowTransitions {
    /// Every state the graph names, as a source or a target.
    pub fn states(&self) -> Vec<String> {
        let mut states: Vec<String> = self
            .graph
            .iter()
            .flat_map(|(from, to)| std::iter::once(from.clone()).chain(to.iter().cloned()))
            .collect();
        states.sort();
        states.dedup();
        states
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequireCount {
    /// The parent's column that claims how many children it has.
    pub count_column: String,
    /// The child table, schema-qualified.
    pub child: String,
    /// The child's columns that reference the parent: a list, or (as the
    /// shorthand's `fk_column`) one name or several separated by commas.
    #[serde(alias = "fk_column", deserialize_with = "one_or_many")]
    pub fk_columns: Vec<String>,
    /// The parent's columns they reference (its foreign key's target, or its
    /// primary key); filled in when the rule is declared.
    #[serde(default)]
    pub parent_columns: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(names) => names
            .split(',')
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .collect(),
        OneOrMany::Many(names) => names,
    })
}

/// What `invariants.repair` does to a violating row.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Repair {
    /// Column -> new value (a JSON string or number, cast to the column's type; null for NULL).
    pub set: BTreeMap<String, serde_json::Value>,
    /// Columns set to now().
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub touch: Vec<String>,
    /// Column whose distinct values among repaired rows `repair` returns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_by: Option<String>,
}

#[derive(Debug, Clone)]
pub enum RuleSpec {
    RequireNotNull(RequireNotNull),
    RequireOnSet(RequireOnSet),
    WriteOnce(WriteOnce),
    AllowTransitions(AllowTransitions),
    RequireCount(RequireCount),
}

fn bad_spec(message: impl Into<String>) -> InvariantError {
    InvariantError::new(Code::ERRCODE_INVALID_PARAMETER_VALUE, message)
}

impl RuleSpec {
    /// Parses `spec` for `kind`; errors name the argument and the field.
    pub fn parse(kind: &str, spec: &serde_json::Value) -> Result<RuleSpec, InvariantError> {
        fn from<T: for<'de> Deserialize<'de>>(kind: &str, spec: &serde_json::Value) -> Result<T, InvariantError> {
            serde_json::from_value(spec.clone()).map_err(|e| {
                bad_spec(format!("argument spec: invalid {kind} rule: {e}"))
                    .hint(format!("See the README for the fields of a {kind} rule."))
            })
        }
        if !spec.is_object() {
            return Err(bad_spec("argument spec must be a JSON object"));
        }
        match kind {
            "require_not_null" => from(kind, spec).map(RuleSpec::RequireNotNull),
            "require_on_set" => from(kind, spec).map(RuleSpec::RequireOnSet),
            "write_once" => from(kind, spec).map(RuleSpec::WriteOnce),
            "allow_transitions" => from(kind, spec).map(RuleSpec::AllowTransitions),
            "require_count" => from(kind, spec).map(RuleSpec::RequireCount),
            other => Err(bad_spec(format!("argument kind: unknown rule kind \"{other}\""))
                .hint(format!("Use one of: {}.", KINDS.join(", ")))),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            RuleSpec::RequireNotNull(_) => "require_not_null",
            RuleSpec::RequireOnSet(_) => "require_on_set",
            RuleSpec::WriteOnce(_) => "write_once",
            RuleSpec::AllowTransitions(_) => "allow_transitions",
            RuleSpec::RequireCount(_) => "require_count",
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        let value = match self {
            RuleSpec::RequireNotNull(s) => serde_json::to_value(s),
            RuleSpec::RequireOnSet(s) => serde_json::to_value(s),
            RuleSpec::WriteOnce(s) => serde_json::to_value(s),
            RuleSpec::AllowTransitions(s) => serde_json::to_value(s),
            RuleSpec::RequireCount(s) => serde_json::to_value(s),
        };
        value.unwrap_or(serde_json::Value::Null)
    }

    pub fn message(&self) -> Option<&str> {
        match self {
            RuleSpec::RequireNotNull(s) => s.message.as_deref(),
            RuleSpec::RequireOnSet(s) => s.message.as_deref(),
            RuleSpec::WriteOnce(s) => s.message.as_deref(),
            RuleSpec::AllowTransitions(s) => s.message.as_deref(),
            RuleSpec::RequireCount(s) => s.message.as_deref(),
        }
    }

    pub fn repair(&self) -> Option<&Repair> {
        match self {
            RuleSpec::RequireNotNull(s) => s.repair.as_ref(),
            RuleSpec::RequireOnSet(s) => s.repair.as_ref(),
            RuleSpec::WriteOnce(_) | RuleSpec::RequireCount(_) => None,
            RuleSpec::AllowTransitions(s) => s.repair.as_ref(),
        }
    }

    /// True for rules the row trigger `invariants_rules` enforces; a
    /// `require_count` rule has constraint triggers of its own.
    pub fn is_row_rule(&self) -> bool {
        !matches!(self, RuleSpec::RequireCount(_))
    }

    /// The columns of the table the rule reads (for a row rule: the columns
    /// whose update fires the trigger).
    pub fn columns(&self) -> Vec<&str> {
        match self {
            RuleSpec::RequireCount(s) => std::iter::once(s.count_column.as_str())
                .chain(s.parent_columns.iter().map(String::as_str))
                .collect(),
            RuleSpec::RequireNotNull(s) => vec![&s.column, &s.when_column],
            RuleSpec::RequireOnSet(s) => vec![&s.column, &s.when_column],
            RuleSpec::WriteOnce(s) => vec![&s.column],
            RuleSpec::AllowTransitions(s) => vec![&s.column],
        }
    }

    /// A SQL condition true for the rows that break the rule as they stand,
    /// or None for rules about changes, which no stored row can break.
    /// `resolve` maps a column name to its column.
    pub fn violation_predicate(&self, resolve: impl Fn(&str) -> Option<Column>) -> Option<String> {
        let in_list = |column: &str, values: &[String]| -> Option<String> {
            let col = resolve(column)?;
            let list = values.iter().map(|v| quote_literal(v)).collect::<Vec<_>>().join(", ");
            // Compared in the type's text form, exactly as the trigger compares
            // them (so '1' declared for a numeric column does not match 1.0
            // here either).
            Some(format!(
                "pg_catalog.format('%s', {}) = ANY (SELECT pg_catalog.format('%s', v::{}) FROM unnest(ARRAY[{list}]::text[]) v)",
                quote_ident(&col.name),
                col.type_name
            ))
        };
        match self {
            RuleSpec::RequireNotNull(s) => Some(format!(
                "(coalesce({}, false) AND {} IS NULL)",
                in_list(&s.when_column, &s.when_values)?,
                quote_ident(&s.column)
            )),
            RuleSpec::RequireOnSet(s) => Some(format!(
                "({} IS NOT NULL AND NOT coalesce({}, false))",
                quote_ident(&s.when_column),
                in_list(&s.column, &s.allowed)?
            )),
            RuleSpec::WriteOnce(_) => None,
            RuleSpec::AllowTransitions(s) => Some(format!(
                "({} IS NOT NULL AND NOT coalesce({}, false))",
                quote_ident(&s.column),
                in_list(&s.column, &s.states())?
            )),
            // The parent is aliased `t` in every detection query.
            RuleSpec::RequireCount(s) => Some(format!(
                "(t.{} IS DISTINCT FROM (SELECT count(*) FROM {} c WHERE {}))",
                quote_ident(&s.count_column),
                s.child,
                s.fk_columns
                    .iter()
                    .zip(&s.parent_columns)
                    .map(|(fk, pk)| format!("c.{} = t.{}", quote_ident(fk), quote_ident(pk)))
                    .collect::<Vec<_>>()
                    .join(" AND ")
            )),
        }
    }

    /// Checks the rule against `table`: columns exist, values fit their
    /// types, lists are not empty, the repair is well formed.
    pub fn validate(&self, table: &Table) -> Result<(), InvariantError> {
        match self {
            RuleSpec::RequireNotNull(s) => {
                column_arg(table, Some(&s.column), "column");
                let when = column_arg(table, Some(&s.when_column), "when_column");
                non_empty(&s.when_values, "when_values")?;
                values_fit(&when, &s.when_values, "when_values")?;
            }
            RuleSpec::RequireOnSet(s) => {
                let column = column_arg(table, Some(&s.column), "column");
                column_arg(table, Some(&s.when_column), "when_column");
                non_empty(&s.allowed, "allowed")?;
                values_fit(&column, &s.allowed, "allowed")?;
            }
            RuleSpec::WriteOnce(s) => {
                column_arg(table, Some(&s.column), "column");
            }
            // Checked, and completed, by require_count::complete when declared.
            RuleSpec::RequireCount(_) => {}
            RuleSpec::AllowTransitions(s) => {
                let column = column_arg(table, Some(&s.column), "column");
                if s.graph.is_empty() {
                    return Err(bad_spec("argument graph must name at least one state")
                        .hint("Pass an object such as {\"pending\": [\"sent\"], \"sent\": []}."));
                }
                values_fit(&column, &s.states(), "graph")?;
            }
        }
        if let Some(message) = self.message() {
            if message.trim().is_empty() {
                return Err(bad_spec("argument message must not be empty"));
            }
        }
        if let Some(repair) = self.repair() {
            validate_repair(table, repair)?;
        }
        Ok(())
    }
}

fn non_empty(values: &[String], arg: &str) -> Result<(), InvariantError> {
    if values.is_empty() {
        return Err(bad_spec(format!("argument {arg} must not be empty")).hint("List at least one value."));
    }
    Ok(())
}

/// Every value must be valid input for the column's type.
fn values_fit(column: &Column, values: &[String], arg: &str) -> Result<(), InvariantError> {
    for value in values {
        let valid = spi(Spi::get_one_with_args::<bool>(
            "SELECT invariants.is_valid_input($1, $2)",
            &[value.as_str().into(), column.type_oid.into()],
        ));
        if valid != Some(true) {
            return Err(InvariantError::new(
                Code::ERRCODE_DATATYPE_MISMATCH,
                format!(
                    "argument {arg}: {} is not a valid value for column \"{}\" of type {}",
                    quote_literal(value),
                    column.name,
                    column.type_name
                ),
            ));
        }
    }
    Ok(())
}

fn validate_repair(table: &Table, repair: &Repair) -> Result<(), InvariantError> {
    if repair.set.is_empty() && repair.touch.is_empty() {
        return Err(bad_spec("argument repair: \"set\" must name at least one column")
            .hint("For example {\"set\": {\"status\": \"pending\"}}."));
    }
    for (name, value) in &repair.set {
        let column = column_arg(table, Some(name), "repair.set");
        match repair_value_text(value) {
            Ok(None) => {}
            Ok(Some(text)) => values_fit(&column, &[text], "repair.set")?,
            Err(e) => return Err(e),
        }
    }
    for name in &repair.touch {
        let column = column_arg(table, Some(name), "repair.touch");
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
        column_arg(table, Some(group_by), "repair.group_by");
    }
    Ok(())
}

/// A repair value as the text to cast to the column type; None for NULL.
pub fn repair_value_text(value: &serde_json::Value) -> Result<Option<String>, InvariantError> {
    match value {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(s) => Ok(Some(s.clone())),
        serde_json::Value::Number(n) => Ok(Some(n.to_string())),
        serde_json::Value::Bool(b) => Ok(Some(b.to_string())),
        other => Err(bad_spec(format!(
            "argument repair.set: {other} is not a value; use a string, number, boolean or null"
        ))),
    }
}
