//! Declaring rules: `invariants.add_rule`, its four shorthands,
//! `invariants.drop_rule`, the `invariants.rules` view, and the one
//! `invariants_rules` trigger per table they (re)install.
use pgrx::prelude::*;

use super::spec::{AllowTransitions, Repair, RequireNotNull, RequireOnSet, RuleSpec, WriteOnce, WriteOnceMode};
use crate::catalog::{self, quote_literal, spi, table_arg, Regclass, Table};
use crate::errors::{fail, Code, InvariantError};
use crate::json_arg::JsonArg;
use crate::privilege::{as_extension_owner, pinned};
use crate::registry::{self, Trigger};
use pg_invariants_core::triggers;
use pgrx::pg_sys::Oid;

pub const TRIGGER_NAME: &str = triggers::RULES.name;

/// Declares a rule of any kind; returns its name.
#[pg_extern(schema = "invariants")]
fn add_rule(tbl: Option<Regclass>, name: Option<&str>, kind: Option<&str>, spec: Option<JsonArg>) -> String {
    // A count rule's child table is named as the caller sees it.
    let spec = spec.map(|spec| {
        let mut spec = spec.value("spec").unwrap_or_else(|e| e.raise());
        if kind == Some("require_count") {
            if let Some(child) = spec.get("child").and_then(|c| c.as_str()).map(str::to_string) {
                let Some(table) = catalog::oid_of(&child).and_then(Table::lookup) else {
                    InvariantError::new(
                        Code::ERRCODE_UNDEFINED_TABLE,
                        format!("argument spec: child table {} does not exist", quote_literal(&child)),
                    )
                    .raise()
                };
                spec["child"] = serde_json::Value::String(table.qualified());
            }
        }
        spec
    });
    pinned(|| {
        let table = table_arg(tbl, "tbl");
        let Some(kind) = kind else {
            fail(Code::ERRCODE_NULL_VALUE_NOT_ALLOWED, "argument kind must not be NULL")
        };
        let Some(spec) = spec else {
            fail(Code::ERRCODE_NULL_VALUE_NOT_ALLOWED, "argument spec must not be NULL")
        };
        let spec = RuleSpec::parse(kind, &spec).unwrap_or_else(|e| InvariantError::from(e).raise());
        let name = match name {
            Some(name) => name.to_string(),
            None => fail(Code::ERRCODE_NULL_VALUE_NOT_ALLOWED, "argument name must not be NULL"),
        };
        declare(&table, &name, spec)
    })
}

/// `column` must not be NULL while `when_column` holds one of `when_values`.
#[pg_extern(schema = "invariants")]
#[allow(clippy::too_many_arguments)]
fn require_not_null(
    tbl: Option<Regclass>,
    column: Option<&str>,
    when_column: Option<&str>,
    when_values: Option<Vec<Option<String>>>,
    name: default!(Option<&str>, "NULL"),
    message: default!(Option<&str>, "NULL"),
    repair: default!(Option<JsonArg>, "NULL"),
) -> String {
    pinned(|| {
        let args = ValueRuleArgs::parse(tbl, column, when_column, when_values, "when_values", message, repair);
        let name = name.map_or_else(
            || format!("{}_required_when_{}", args.column, args.when_column),
            str::to_string,
        );
        let spec = RuleSpec::RequireNotNull(RequireNotNull {
            column: args.column,
            when_column: args.when_column,
            when_values: args.values,
            message: args.message,
            repair: args.repair,
        });
        declare(&args.table, &name, spec)
    })
}

/// Once `when_column` is set (not NULL), `column` must be one of `allowed`.
#[pg_extern(schema = "invariants")]
fn require_on_set(
    tbl: Option<Regclass>,
    column: Option<&str>,
    when_column: Option<&str>,
    allowed: Option<Vec<Option<String>>>,
    name: default!(Option<&str>, "NULL"),
    message: default!(Option<&str>, "NULL"),
    repair: default!(Option<JsonArg>, "NULL"),
) -> String {
    pinned(|| {
        let args = ValueRuleArgs::parse(tbl, column, when_column, allowed, "allowed", message, repair);
        let name = name.map_or_else(
            || format!("{}_allowed_when_{}_set", args.column, args.when_column),
            str::to_string,
        );
        let spec = RuleSpec::RequireOnSet(RequireOnSet {
            column: args.column,
            when_column: args.when_column,
            allowed: args.values,
            message: args.message,
            repair: args.repair,
        });
        declare(&args.table, &name, spec)
    })
}

/// The arguments the two value-list shorthands share, checked in order.
struct ValueRuleArgs {
    table: Table,
    column: String,
    when_column: String,
    values: Vec<String>,
    message: Option<String>,
    repair: Option<Repair>,
}

impl ValueRuleArgs {
    fn parse(
        tbl: Option<Regclass>,
        column: Option<&str>,
        when_column: Option<&str>,
        values: Option<Vec<Option<String>>>,
        values_name: &str,
        message: Option<&str>,
        repair: Option<JsonArg>,
    ) -> ValueRuleArgs {
        ValueRuleArgs {
            table: table_arg(tbl, "tbl"),
            column: required(column, "column"),
            when_column: required(when_column, "when_column"),
            values: values_arg(values, values_name),
            message: message.map(str::to_string),
            repair: repair_arg(repair),
        }
    }
}

/// Once set, `column` is never cleared (`no_clear`) or never changed (`immutable`).
#[pg_extern(schema = "invariants")]
fn write_once(
    tbl: Option<Regclass>,
    column: Option<&str>,
    mode: default!(Option<&str>, "'no_clear'"),
    name: default!(Option<&str>, "NULL"),
    message: default!(Option<&str>, "NULL"),
) -> String {
    pinned(|| {
        let table = table_arg(tbl, "tbl");
        let column = required(column, "column");
        let mode = match mode {
            Some("no_clear") => WriteOnceMode::NoClear,
            Some("immutable") => WriteOnceMode::Immutable,
            Some(other) => InvariantError::new(
                Code::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("argument mode: unknown mode \"{other}\""),
            )
            .hint("Use 'no_clear' (never back to NULL) or 'immutable' (never changes once set).")
            .raise(),
            None => fail(Code::ERRCODE_NULL_VALUE_NOT_ALLOWED, "argument mode must not be NULL"),
        };
        let suffix = if mode == WriteOnceMode::Immutable {
            "immutable"
        } else {
            "write_once"
        };
        let name = name.map_or_else(|| format!("{column}_{suffix}"), str::to_string);
        let spec = RuleSpec::WriteOnce(WriteOnce {
            column,
            mode,
            message: message.map(str::to_string),
        });
        declare(&table, &name, spec)
    })
}

/// `column` may change only along the edges of `graph`
/// (`{"pending": ["queued", "sent"], ...}`).
#[pg_extern(schema = "invariants")]
fn allow_transitions(
    tbl: Option<Regclass>,
    column: Option<&str>,
    graph: Option<JsonArg>,
    name: default!(Option<&str>, "NULL"),
    message: default!(Option<&str>, "NULL"),
) -> String {
    pinned(|| {
        let table = table_arg(tbl, "tbl");
        let column = required(column, "column");
        let Some(graph) = graph else {
            fail(Code::ERRCODE_NULL_VALUE_NOT_ALLOWED, "argument graph must not be NULL")
        };
        let graph = graph.value("graph").unwrap_or_else(|e| e.raise());
        let graph = serde_json::from_value(graph).unwrap_or_else(|e| {
            InvariantError::new(Code::ERRCODE_INVALID_PARAMETER_VALUE, format!("argument graph: {e}"))
                .hint("Pass an object mapping each state to the list of states it may change to, e.g. {\"pending\": [\"sent\"]}.")
                .raise()
        });
        let name = name.map_or_else(|| format!("{column}_transitions"), str::to_string);
        let spec = RuleSpec::AllowTransitions(AllowTransitions {
            column,
            graph,
            message: message.map(str::to_string),
            repair: None,
        });
        declare(&table, &name, spec)
    })
}

/// Removes a rule; the table's trigger is reinstalled without it.
#[pg_extern(schema = "invariants")]
fn drop_rule(tbl: Option<Regclass>, name: Option<&str>) {
    pinned(|| {
        let table = table_arg(tbl, "tbl");
        let name = required(name, "name");
        let rules = super::load(Some(&[table.oid])).unwrap_or_else(|e| e.raise());
        let removed = as_extension_owner(|| {
            spi(Spi::get_one_with_args::<i64>(
                "WITH gone AS (DELETE FROM invariants.rule_definitions WHERE tbl = $1 AND name = $2 RETURNING 1)
                 SELECT count(*) FROM gone",
                &[Regclass(table.oid).into(), name.as_str().into()],
            ))
        });
        if removed != Some(1) {
            InvariantError::new(
                Code::ERRCODE_UNDEFINED_OBJECT,
                format!("rule \"{name}\" of table {} does not exist", table.display()),
            )
            .hint("SELECT name FROM invariants.rules WHERE tbl = '...'::regclass lists the table's rules.")
            .raise();
        }
        if let Some(RuleSpec::RequireCount(count)) = rules.iter().find(|r| r.name == name).map(|r| &r.spec) {
            super::require_count::sync_triggers(&table, count);
        }
        install_trigger(&table);
    })
}

pub(super) fn required(value: Option<&str>, arg: &str) -> String {
    match value {
        Some(value) if !value.is_empty() => value.to_string(),
        Some(_) => fail(
            Code::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("argument {arg} must not be empty"),
        ),
        None => fail(
            Code::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            format!("argument {arg} must not be NULL"),
        ),
    }
}

fn values_arg(values: Option<Vec<Option<String>>>, arg: &str) -> Vec<String> {
    let Some(values) = values else {
        fail(
            Code::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            format!("argument {arg} must not be NULL"),
        )
    };
    values
        .into_iter()
        .map(|v| {
            v.unwrap_or_else(|| {
                fail(
                    Code::ERRCODE_NULL_VALUE_NOT_ALLOWED,
                    format!("argument {arg} must not contain NULL"),
                )
            })
        })
        .collect()
}

fn repair_arg(repair: Option<JsonArg>) -> Option<Repair> {
    repair.map(|value| {
        let value = value.value("repair").unwrap_or_else(|e| e.raise());
        serde_json::from_value(value).unwrap_or_else(|e| {
            InvariantError::new(Code::ERRCODE_INVALID_PARAMETER_VALUE, format!("argument repair: {e}"))
                .hint("Pass {\"set\": {\"column\": value}, \"touch\": [\"updated_at\"], \"group_by\": \"column\"}.")
                .raise()
        })
    })
}

/// Validates and stores a rule, then reinstalls the table's trigger.
pub(super) fn declare(table: &Table, name: &str, spec: RuleSpec) -> String {
    if name.is_empty() {
        fail(Code::ERRCODE_INVALID_PARAMETER_VALUE, "argument name must not be empty");
    }
    let is_partition = crate::sql::one::<bool>(
        "SELECT relispartition FROM pg_catalog.pg_class WHERE oid = $1",
        &[table.oid.into()],
    );
    if is_partition == Some(true) {
        InvariantError::new(
            Code::ERRCODE_WRONG_OBJECT_TYPE,
            format!("argument tbl: {} is a partition", table.display()),
        )
        .hint("Declare rules on the partitioned table; they hold in every partition, present and future.")
        .raise();
    }
    let exists = crate::sql::one::<bool>(
        "SELECT EXISTS (SELECT FROM invariants.rule_definitions WHERE tbl = $1 AND name = $2)",
        &[Regclass(table.oid).into(), name.into()],
    );
    if exists == Some(true) {
        InvariantError::new(
            Code::ERRCODE_DUPLICATE_OBJECT,
            format!("rule \"{name}\" already exists on table {}", table.display()),
        )
        .hint("Choose another name, or drop the rule first with invariants.drop_rule.")
        .raise();
    }
    let spec = match spec {
        RuleSpec::RequireCount(count) => {
            RuleSpec::RequireCount(super::require_count::complete(table, count).unwrap_or_else(|e| e.raise()))
        }
        other => other,
    };
    let spec = super::spec::complete(spec, table).unwrap_or_else(|e| e.raise());
    let child = match &spec {
        RuleSpec::RequireCount(count) => catalog::oid_of(&count.child),
        _ => None,
    };
    as_extension_owner(|| {
        spi(Spi::run_with_args(
            "INSERT INTO invariants.rule_definitions (tbl, name, kind, spec, created_by, child)
             VALUES ($1, $2, $3, $4, session_user, $5)",
            &[
                Regclass(table.oid).into(),
                name.into(),
                spec.kind().into(),
                pgrx::JsonB(spec.to_json()).into(),
                child.map(Regclass).into(),
            ],
        ))
    });
    if let RuleSpec::RequireCount(count) = &spec {
        super::require_count::sync_triggers(table, count);
    }
    install_trigger(table);
    name.to_string()
}

/// The rules trigger of a table with row rules (declared on it or a table
/// above it): INSERT, and UPDATE of exactly the columns its rules read.
pub fn triggers(relid: Oid, lineage: &[Oid]) -> Vec<Trigger> {
    let rules: Vec<_> = super::load(Some(lineage))
        .unwrap_or_default()
        .into_iter()
        .filter(|rule| rule.spec.is_row_rule())
        .collect();
    if rules.is_empty() {
        return Vec::new();
    }
    // Columns that no longer exist cannot be named; the rule reading one
    // makes every write fail until it is fixed.
    let present = catalog::columns(relid);
    let mut columns: Vec<String> = rules
        .iter()
        .flat_map(|rule| rule.spec.columns())
        .filter(|name| present.iter().any(|c| c.name == *name))
        .map(str::to_string)
        .collect();
    columns.sort();
    columns.dedup();
    vec![Trigger {
        columns,
        ..triggers::RULES.on_table()
    }]
}

/// Makes the triggers of `table` (and the tables below it) follow its
/// rules.
pub fn install_trigger(table: &Table) {
    registry::sync_tree(table.oid);
}

pgrx::extension_sql!(
    r#"
CREATE VIEW invariants.rules AS
SELECT r.tbl,
       r.name,
       r.kind,
       CASE WHEN r.child IS NULL THEN r.spec
            ELSE r.spec || pg_catalog.jsonb_build_object('child', r.child::pg_catalog.text) END AS spec,
       r.spec ->> 'message'        AS message,
       r.kind <> 'write_once'      AS detectable,
       r.spec ? 'repair'           AS repairable,
       r.created_at,
       r.created_by
  FROM invariants.rule_definitions r;
GRANT SELECT ON invariants.rules TO PUBLIC;
"#,
    name = "rules_view",
    requires = ["schema"]
);
