//! `invariants.enforce_rules()`: the BEFORE INSERT OR UPDATE OF <rule
//! columns> row trigger. It reads values straight from the tuples, with the
//! table's rules compiled once per relation and cached until the relation
//! or its rules change.

use pgrx::pg_sys::{self, Datum, Oid};

use super::spec::{RuleSpec, WriteOnceMode};
use super::values::ValueSet;
use crate::catalog::{self, key_columns, self_and_ancestors, Column, Table};
use crate::errors::{trigger_data, Code, InvariantError};
use crate::relcache;
use crate::tuple::{ColumnReader, Row};
use pg_invariants_core::transitions::{Seen, StateGraph};

crate::c_function!(enforce_rules, pg_finfo_enforce_rules, enforce);

pgrx::extension_sql!(
    r#"
CREATE FUNCTION invariants.enforce_rules() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'enforce_rules';
"#,
    name = "enforce_rules",
    requires = ["schema"]
);

enum Check {
    RequireNotNull {
        column: ColumnReader,
        when: ColumnReader,
        when_values: ValueSet,
    },
    RequireOnSet {
        column: ColumnReader,
        when: ColumnReader,
        allowed: ValueSet,
    },
    WriteOnce {
        column: ColumnReader,
        mode: WriteOnceMode,
        /// Compares old and new values in the column's type (immutable).
        values: ValueSet,
    },
    Transitions {
        column: ColumnReader,
        /// Every state the graph names, typed, at its position in `graph`.
        states: ValueSet,
        graph: StateGraph,
    },
}

struct CompiledRule {
    name: String,
    /// The table the rule was declared on (a partition's parent, say).
    table: Table,
    message: Option<String>,
    check: Check,
    /// The declared values, for messages.
    spec: RuleSpec,
}

/// Everything the trigger needs for one relation.
struct CompiledRules {
    rules: Vec<CompiledRule>,
    key: Vec<ColumnReader>,
}

/// What a failed check reports.
struct Violation {
    detail: String,
    hint: String,
}

fn enforce(fcinfo: pg_sys::FunctionCallInfo) -> Result<Datum, InvariantError> {
    // SAFETY: fcinfo is the one Postgres passed to this C function.
    let trigger = unsafe { trigger_data(fcinfo)? };
    let event = trigger.tg_event;
    let is_before_row = event & pg_sys::TRIGGER_EVENT_TIMINGMASK == pg_sys::TRIGGER_EVENT_BEFORE
        && event & pg_sys::TRIGGER_EVENT_ROW != 0;
    let op = event & pg_sys::TRIGGER_EVENT_OPMASK;
    if !is_before_row || (op != pg_sys::TRIGGER_EVENT_INSERT && op != pg_sys::TRIGGER_EVENT_UPDATE) {
        return Err(InvariantError::new(
            Code::ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
            "invariants.enforce_rules() must run as a BEFORE INSERT OR UPDATE ... FOR EACH ROW trigger",
        ));
    }
    // SAFETY: the trigger manager passes an open relation.
    let relid = unsafe { (*trigger.tg_relation).rd_id };
    let compiled = relcache::get_or_build(relid, || compile(relid));
    let compiled = compiled.as_ref().as_ref().map_err(Clone::clone)?;

    let (old_slot, new_slot, new_tuple) = if op == pg_sys::TRIGGER_EVENT_UPDATE {
        (Some(trigger.tg_trigslot), trigger.tg_newslot, trigger.tg_newtuple)
    } else {
        (None, trigger.tg_trigslot, trigger.tg_trigtuple)
    };
    // SAFETY: the trigger manager's slots and tuples hold the old and new
    // row until this function returns.
    let (old, new) = unsafe {
        (
            old_slot.map(|s| Row::in_slot(s, trigger.tg_trigtuple)),
            Row::in_slot(new_slot, new_tuple),
        )
    };
    for rule in &compiled.rules {
        if let Some(violation) = check(&rule.check, old.as_ref(), &new) {
            return Err(violation_error(compiled, rule, violation, &new));
        }
    }
    Ok(Datum::from(new_tuple))
}

fn check(check: &Check, old: Option<&Row>, new: &Row) -> Option<Violation> {
    match check {
        Check::RequireNotNull {
            column,
            when,
            when_values,
        } => {
            if column.is_null(new) && when_values.contains(when, new) {
                return Some(Violation {
                    detail: format!("{} is NULL while {} = {}.", column.name, when.name, when.display(new)),
                    hint: format!(
                        "Set {} in the same statement, or use a {} value that does not require it.",
                        column.name, when.name
                    ),
                });
            }
            None
        }
        Check::RequireOnSet { column, when, allowed } => {
            if when.is_null(new) {
                return None;
            }
            match allowed.contains(column, new) {
                true => None,
                false => Some(Violation {
                    detail: format!(
                        "{} = {} while {} is set ({}).",
                        column.name,
                        column.display(new),
                        when.name,
                        when.display(new)
                    ),
                    hint: format!(
                        "Once {} is set, {} must be one of the values the rule allows.",
                        when.name, column.name
                    ),
                }),
            }
        }
        Check::WriteOnce { column, mode, values } => {
            let old = old?;
            if column.is_null(old) {
                return None;
            }
            let cleared = column.is_null(new);
            let changed = *mode == WriteOnceMode::Immutable && !values.same(column, old, new);
            if !(cleared || changed) {
                return None;
            }
            let (what, hint) = match mode {
                WriteOnceMode::NoClear => ("cleared", format!("{} can never be cleared once set.", column.name)),
                WriteOnceMode::Immutable => ("changed", format!("{} can never change once set.", column.name)),
            };
            Some(Violation {
                detail: format!(
                    "{} would be {what}: {} -> {}.",
                    column.name,
                    column.display(old),
                    column.display(new)
                ),
                hint,
            })
        }
        Check::Transitions { column, states, graph } => {
            let seen = |row: &Row| {
                column.datum(row).map_or(Seen::Null, |datum| {
                    states.position(datum).map_or(Seen::Unknown, Seen::State)
                })
            };
            let from = old.map_or(Seen::Null, seen);
            let unchanged = old.is_some_and(|old| states.same(column, old, new));
            let allowed = graph.allows(from, seen(new), unchanged);
            if allowed {
                return None;
            }
            let old_display = old.map_or("(new row)".to_string(), |old| column.display(old));
            let targets = match from {
                Seen::State(from) => {
                    let targets: Vec<String> = graph.targets(from).iter().map(|t| format!("'{t}'")).collect();
                    Some(targets.join(", "))
                        .filter(|t| !t.is_empty())
                        .unwrap_or_else(|| "none".into())
                }
                _ => String::new(),
            };
            Some(Violation {
                detail: format!(
                    "{} would change from {} to {}.",
                    column.name,
                    old_display,
                    column.display(new)
                ),
                hint: if matches!(from, Seen::State(_)) {
                    format!("From {old_display}, {} may change to: {targets}.", column.name)
                } else {
                    format!("{} must be one of the states of the rule's graph.", column.name)
                },
            })
        }
    }
}

fn violation_error(compiled: &CompiledRules, rule: &CompiledRule, violation: Violation, row: &Row) -> InvariantError {
    let message = rule.message.clone().unwrap_or_else(|| {
        format!(
            "new row for relation \"{}\" violates rule \"{}\"",
            rule.table.name, rule.name
        )
    });
    let key = if compiled.key.is_empty() {
        String::from(" The table has no primary key.")
    } else {
        let names: Vec<&str> = compiled.key.iter().map(|c| c.name.as_str()).collect();
        let values: Vec<String> = compiled
            .key
            .iter()
            .map(|c| {
                c.text(row)
                    .map_or("NULL".into(), |v| String::from_utf8_lossy(&v).into_owned())
            })
            .collect();
        format!(" Failing row key: ({})=({}).", names.join(", "), values.join(", "))
    };
    InvariantError::new(Code::ERRCODE_CHECK_VIOLATION, message)
        .detail(format!("{}{key} Rule: {}.", violation.detail, describe(&rule.spec)))
        .hint(violation.hint)
        .table(&rule.table.schema, &rule.table.name)
        .constraint(&rule.name)
}

/// The rule in one line, for DETAIL.
fn describe(spec: &RuleSpec) -> String {
    let list = |values: &[String]| values.iter().map(|v| format!("'{v}'")).collect::<Vec<_>>().join(", ");
    match spec {
        RuleSpec::RequireNotNull(s) => {
            format!(
                "{} IS NOT NULL when {} is one of {}",
                s.column,
                s.when_column,
                list(&s.when_values)
            )
        }
        RuleSpec::RequireOnSet(s) => {
            format!(
                "once {} is set, {} is one of {}",
                s.when_column,
                s.column,
                list(&s.allowed)
            )
        }
        RuleSpec::WriteOnce(s) => match s.mode {
            WriteOnceMode::NoClear => format!("{} is never cleared once set", s.column),
            WriteOnceMode::Immutable => format!("{} never changes once set", s.column),
        },
        RuleSpec::RequireCount(s) => format!("{} equals the number of rows of {}", s.count_column, s.child),
        RuleSpec::AllowTransitions(s) => format!(
            "{} follows {}",
            s.column,
            serde_json::to_string(&s.graph).unwrap_or_default()
        ),
    }
}

/// Compiles the rules that hold for `relid`: its own and, for a partition,
/// those of its ancestors, with columns resolved against `relid` itself.
fn compile(relid: Oid) -> Result<CompiledRules, InvariantError> {
    let tables = self_and_ancestors(relid);
    let rules = super::load(Some(&tables))?;
    let columns = catalog::columns(relid);
    let reader = |rule: &super::Rule, table: &Table, name: &str| -> Result<(Column, ColumnReader), InvariantError> {
        match columns.iter().find(|c| c.name == name) {
            Some(column) => Ok((column.clone(), ColumnReader::new(column))),
            None => Err(InvariantError::new(
                Code::ERRCODE_UNDEFINED_COLUMN,
                format!(
                    "rule \"{}\" of table {} reads column \"{name}\", which no longer exists",
                    rule.name,
                    table.display()
                ),
            )
            .hint(format!(
                "Drop the rule with invariants.drop_rule('{}', '{}') and declare it again with the column's new name.",
                table.display(),
                rule.name
            ))
            .table(&table.schema, &table.name)
            .column(name)
            .constraint(&rule.name)),
        }
    };
    let mut compiled = Vec::with_capacity(rules.len());
    for rule in rules {
        let Some(table) = Table::lookup(rule.tbl) else {
            continue;
        };
        let values = |column: &Column, list: &[String]| -> Result<ValueSet, InvariantError> {
            ValueSet::compile(&table, column, list).map_err(|problem| {
                InvariantError::new(
                    Code::ERRCODE_DATATYPE_MISMATCH,
                    format!(
                        "rule \"{}\" of table {} names values that column \"{}\" no longer takes",
                        rule.name,
                        table.display(),
                        column.name
                    ),
                )
                .detail(problem)
                .hint(format!(
                    "Drop the rule with invariants.drop_rule('{}', '{}') and declare it again.",
                    table.display(),
                    rule.name
                ))
                .table(&table.schema, &table.name)
                .column(&column.name)
                .constraint(&rule.name)
            })
        };
        let check = match &rule.spec {
            RuleSpec::RequireNotNull(s) => {
                let (_, column) = reader(&rule, &table, &s.column)?;
                let (when_column, when) = reader(&rule, &table, &s.when_column)?;
                Check::RequireNotNull {
                    column,
                    when,
                    when_values: values(&when_column, &s.when_values)?,
                }
            }
            RuleSpec::RequireOnSet(s) => {
                let (target, column) = reader(&rule, &table, &s.column)?;
                let (_, when) = reader(&rule, &table, &s.when_column)?;
                Check::RequireOnSet {
                    column,
                    when,
                    allowed: values(&target, &s.allowed)?,
                }
            }
            RuleSpec::WriteOnce(s) => {
                let (target, column) = reader(&rule, &table, &s.column)?;
                Check::WriteOnce {
                    column,
                    mode: s.mode,
                    values: values(&target, &[])?,
                }
            }
            RuleSpec::RequireCount(_) => continue,
            RuleSpec::AllowTransitions(s) => {
                let (target, column) = reader(&rule, &table, &s.column)?;
                let graph = StateGraph::new(&s.graph);
                Check::Transitions {
                    column,
                    states: values(&target, &graph.names)?,
                    graph,
                }
            }
        };
        compiled.push(CompiledRule {
            name: rule.name.clone(),
            message: rule.spec.message().map(str::to_string),
            spec: rule.spec,
            table,
            check,
        });
    }
    let key = key_columns(relid)
        .iter()
        .filter_map(|name| columns.iter().find(|c| &c.name == name).map(ColumnReader::new))
        .collect();
    Ok(CompiledRules { rules: compiled, key })
}
