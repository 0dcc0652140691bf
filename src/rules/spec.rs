//! The rule declarations stored in `invariants.rule_definitions.spec`,
//! parsed with serde and validated against the table before they are stored.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::values;
use crate::catalog::{column_arg, equality_operator, qualified_operator, quote_ident, Column, Table, Value};
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

    /// Follows the rename of column `old` to `new`: of the table the rule is
    /// declared on (`own`), and of its child table (`child`, count rules).
    /// True when the rule named it.
    pub fn rename_column(&mut self, old: &str, new: &str, own: bool, child: bool) -> bool {
        let changed = std::cell::Cell::new(false);
        let rename = |name: &mut String| {
            if name == old {
                *name = new.to_string();
                changed.set(true);
            }
        };
        if own {
            match self {
                RuleSpec::RequireNotNull(s) => {
                    rename(&mut s.column);
                    rename(&mut s.when_column);
                }
                RuleSpec::RequireOnSet(s) => {
                    rename(&mut s.column);
                    rename(&mut s.when_column);
                }
                RuleSpec::WriteOnce(s) => rename(&mut s.column),
                RuleSpec::AllowTransitions(s) => rename(&mut s.column),
                RuleSpec::RequireCount(s) => {
                    rename(&mut s.count_column);
                    s.parent_columns.iter_mut().for_each(rename);
                }
            }
            let repair = match self {
                RuleSpec::RequireNotNull(s) => s.repair.as_mut(),
                RuleSpec::RequireOnSet(s) => s.repair.as_mut(),
                RuleSpec::AllowTransitions(s) => s.repair.as_mut(),
                RuleSpec::WriteOnce(_) | RuleSpec::RequireCount(_) => None,
            };
            if let Some(repair) = repair {
                if let Some(value) = repair.set.remove(old) {
                    repair.set.insert(new.to_string(), value);
                    changed.set(true);
                }
                repair.touch.iter_mut().for_each(rename);
                if let Some(group_by) = repair.group_by.as_mut() {
                    rename(group_by);
                }
            }
        }
        if child {
            if let RuleSpec::RequireCount(s) = self {
                s.fk_columns.iter_mut().for_each(rename);
            }
        }
        changed.get()
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

    /// A SQL condition on a row `t` of `table`, true for the rows that break
    /// the rule as they stand; None for rules about changes, which no stored
    /// row can break, and for count rules, which are detected in batches
    /// (see `violations`). Values are compared in the column's type, passed
    /// as arguments added to `params`. `resolve` maps a column name to its
    /// column.
    pub fn violation_predicate(
        &self,
        table: &Table,
        resolve: impl Fn(&str) -> Option<Column>,
        params: &mut Params,
    ) -> Option<String> {
        let mut in_list = |column: &str, values: &[String]| -> Option<String> {
            let col = resolve(column)?;
            let operator = equality_operator(col.type_oid).and_then(qualified_operator)?;
            let placeholders: Vec<String> = values::typed(table, &col, values)
                .into_iter()
                .map(|value| params.push(value))
                .collect();
            Some(format!(
                "t.{} {operator} ANY (ARRAY[{}])",
                quote_ident(&col.name),
                placeholders.join(", ")
            ))
        };
        match self {
            RuleSpec::RequireNotNull(s) => Some(format!(
                "(coalesce({}, false) AND t.{} IS NULL)",
                in_list(&s.when_column, &s.when_values)?,
                quote_ident(&s.column)
            )),
            RuleSpec::RequireOnSet(s) => Some(format!(
                "(t.{} IS NOT NULL AND NOT coalesce({}, false))",
                quote_ident(&s.when_column),
                in_list(&s.column, &s.allowed)?
            )),
            RuleSpec::AllowTransitions(s) => Some(format!(
                "(t.{} IS NOT NULL AND NOT coalesce({}, false))",
                quote_ident(&s.column),
                in_list(&s.column, &s.states())?
            )),
            RuleSpec::WriteOnce(_) | RuleSpec::RequireCount(_) => None,
        }
    }

    /// Checks the rule against `table` and completes it: columns exist and
    /// are not generated (BEFORE triggers see generated columns before
    /// they are computed), values are valid for their columns and stored in
    /// their canonical text, lists are not empty, the repair is well formed.
    pub fn complete(self, table: &Table) -> Result<RuleSpec, InvariantError> {
        if let Some(message) = self.message() {
            if message.trim().is_empty() {
                return Err(bad_spec("argument message must not be empty"));
            }
        }
        let spec = match self {
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
}

/// The values once each, in their first order.
fn dedup(values: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    values.into_iter().filter(|v| seen.insert(v.clone())).collect()
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
