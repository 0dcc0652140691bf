//! The rule declarations stored in `invariants.rule_definitions.spec`, and
//! their parsing with serde. Checking a declaration against its table
//! (columns, types, values) needs the server and lives in the extension.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::quote::quote_ident;

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
        crate::transitions::states(&self.graph)
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

/// A declaration that cannot be a rule: what is wrong, and how to fix it.
/// The extension raises it as SQLSTATE 22023 (invalid_parameter_value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub message: String,
    pub hint: Option<String>,
}

impl SpecError {
    pub fn new(message: impl Into<String>) -> SpecError {
        SpecError {
            message: message.into(),
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> SpecError {
        self.hint = Some(hint.into());
        self
    }
}

fn bad_spec(message: impl Into<String>) -> SpecError {
    SpecError::new(message)
}

impl RuleSpec {
    /// Parses `spec` for `kind`; errors name the argument and the field.
    pub fn parse(kind: &str, spec: &serde_json::Value) -> Result<RuleSpec, SpecError> {
        fn from<T: for<'de> Deserialize<'de>>(kind: &str, spec: &serde_json::Value) -> Result<T, SpecError> {
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

    /// A SQL condition on a row `t`, true for the rows that break the rule
    /// as they stand; None for rules about changes, which no stored row can
    /// break, and for count rules, which are detected in batches.
    /// `in_list(column, values)` is the condition that `t.column` is one of
    /// `values`, compared in the column's type ([`in_list_sql`]); None when
    /// the column cannot be compared.
    pub fn violation_predicate(&self, mut in_list: impl FnMut(&str, &[String]) -> Option<String>) -> Option<String> {
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
}

/// `t.column OP ANY (ARRAY[$1, ...])`: the column is one of the values
/// passed as `placeholders`, compared with `operator` (schema-qualified).
pub fn in_list_sql(column: &str, operator: &str, placeholders: &[String]) -> String {
    format!(
        "t.{} {operator} ANY (ARRAY[{}])",
        quote_ident(column),
        placeholders.join(", ")
    )
}

/// The values once each, in their first order.
pub fn dedup(values: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    values.into_iter().filter(|v| seen.insert(v.clone())).collect()
}

/// A repair value as the text to cast to the column type; None for NULL.
pub fn repair_value_text(value: &serde_json::Value) -> Result<Option<String>, SpecError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(kind: &str, spec: serde_json::Value) -> Result<RuleSpec, SpecError> {
        RuleSpec::parse(kind, &spec)
    }

    #[test]
    fn each_kind_parses_and_serialises_back() {
        let specs = [
            (
                "require_not_null",
                json!({"column": "a", "when_column": "s", "when_values": ["x"]}),
            ),
            (
                "require_on_set",
                json!({"column": "a", "when_column": "s", "allowed": ["x"]}),
            ),
            ("write_once", json!({"column": "a", "mode": "immutable"})),
            ("allow_transitions", json!({"column": "s", "graph": {"a": ["b"]}})),
            (
                "require_count",
                json!({"count_column": "n", "child": "public.c", "fk_columns": ["p"], "parent_columns": ["id"]}),
            ),
        ];
        for (kind, spec) in specs {
            let parsed = parse(kind, spec.clone()).unwrap_or_else(|e| panic!("{kind}: {e:?}"));
            assert_eq!(parsed.kind(), kind);
            assert_eq!(parsed.to_json(), spec);
        }
    }

    #[test]
    fn bad_declarations_say_what_is_wrong() {
        let error = parse("require_not_null", json!([1])).unwrap_err();
        assert_eq!(error.message, "argument spec must be a JSON object");
        let error = parse("nope", json!({})).unwrap_err();
        assert_eq!(error.message, "argument kind: unknown rule kind \"nope\"");
        assert!(error.hint.unwrap_or_default().contains("require_count"));
        let error = parse("write_once", json!({"column": "a", "colour": 1})).unwrap_err();
        assert!(error
            .message
            .starts_with("argument spec: invalid write_once rule: unknown field `colour`"));
        let error = parse("write_once", json!({"column": "a", "mode": "sometimes"})).unwrap_err();
        assert!(
            error.message.contains("unknown variant `sometimes`"),
            "{}",
            error.message
        );
        let error = parse("require_on_set", json!({"column": "a", "when_column": "s"})).unwrap_err();
        assert!(error.message.contains("missing field `allowed`"), "{}", error.message);
    }

    #[test]
    fn a_count_rule_takes_one_or_several_key_columns() {
        let one = parse(
            "require_count",
            json!({"count_column": "n", "child": "c", "fk_column": "a, b,"}),
        );
        let Ok(RuleSpec::RequireCount(one)) = one else {
            panic!("{one:?}")
        };
        assert_eq!(one.fk_columns, ["a", "b"]);
        let many = parse(
            "require_count",
            json!({"count_column": "n", "child": "c", "fk_columns": ["a"]}),
        );
        let Ok(RuleSpec::RequireCount(many)) = many else {
            panic!("{many:?}")
        };
        assert_eq!(many.fk_columns, ["a"]);
    }

    #[test]
    fn a_column_rename_reaches_every_field_that_names_it() {
        let mut rule = parse(
            "require_not_null",
            json!({"column": "a", "when_column": "a", "when_values": ["x"],
                   "repair": {"set": {"a": "1"}, "touch": ["a"], "group_by": "a"}}),
        )
        .unwrap();
        assert!(rule.rename_column("a", "b", true, false));
        assert_eq!(
            rule.to_json(),
            json!({"column": "b", "when_column": "b", "when_values": ["x"],
                   "repair": {"set": {"b": "1"}, "touch": ["b"], "group_by": "b"}})
        );
        assert!(!rule.rename_column("zzz", "y", true, true));
        let mut count = parse(
            "require_count",
            json!({"count_column": "n", "child": "c", "fk_columns": ["n"], "parent_columns": ["n"]}),
        )
        .unwrap();
        // The child's rename reaches only the child's columns.
        assert!(count.rename_column("n", "m", false, true));
        assert_eq!(count.columns(), ["n", "n"]);
        assert!(count.rename_column("n", "p", true, false));
        assert_eq!(count.columns(), ["p", "p"]);
    }

    #[test]
    fn violation_predicates_read_the_stored_row() {
        let in_list = |column: &str, values: &[String]| {
            let placeholders: Vec<String> = (1..=values.len()).map(|i| format!("${i}")).collect();
            Some(in_list_sql(column, "OPERATOR(pg_catalog.=)", &placeholders))
        };
        let rule = parse(
            "require_not_null",
            json!({"column": "shipped_at", "when_column": "status", "when_values": ["shipped", "done"]}),
        )
        .unwrap();
        assert_eq!(
            rule.violation_predicate(in_list).as_deref(),
            Some("(coalesce(t.\"status\" OPERATOR(pg_catalog.=) ANY (ARRAY[$1, $2]), false) AND t.\"shipped_at\" IS NULL)")
        );
        let rule = parse(
            "allow_transitions",
            json!({"column": "s", "graph": {"b": ["a"], "a": []}}),
        )
        .unwrap();
        let mut seen = Vec::new();
        let sql = rule.violation_predicate(|column, values| {
            seen.push((column.to_string(), values.to_vec()));
            Some("IN".into())
        });
        assert_eq!(
            sql.as_deref(),
            Some("(t.\"s\" IS NOT NULL AND NOT coalesce(IN, false))")
        );
        assert_eq!(seen, [("s".to_string(), vec!["a".to_string(), "b".to_string()])]);
        // A column that cannot be compared gives no predicate.
        assert_eq!(rule.violation_predicate(|_, _| None), None);
        let rule = parse("write_once", json!({"column": "a"})).unwrap();
        assert_eq!(rule.violation_predicate(in_list), None);
    }

    #[test]
    fn repair_values_are_text_or_null() {
        assert_eq!(repair_value_text(&json!(null)), Ok(None));
        assert_eq!(repair_value_text(&json!("x")), Ok(Some("x".into())));
        // Numbers keep their digits exactly as written.
        let number: serde_json::Value = serde_json::from_str("1.50").unwrap();
        assert_eq!(repair_value_text(&number), Ok(Some("1.50".into())));
        let big: serde_json::Value = serde_json::from_str("12345678901234567890.000000000000000001").unwrap();
        assert_eq!(
            repair_value_text(&big),
            Ok(Some("12345678901234567890.000000000000000001".into()))
        );
        assert_eq!(repair_value_text(&json!(true)), Ok(Some("true".into())));
        assert!(repair_value_text(&json!([1])).is_err());
    }

    #[test]
    fn dedup_keeps_the_first_of_each() {
        assert_eq!(dedup(vec!["b".into(), "a".into(), "b".into()]), ["b", "a"]);
    }
}
