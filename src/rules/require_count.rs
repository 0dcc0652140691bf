//! Cross-table counts (incident 2): `invariants.require_count` declares
//! that a parent's count column equals the number of its child rows.
//!
//! Two deferred constraint triggers note every parent a transaction touches
//! (`invariants.count_child_changed()` on the child: rows inserted, deleted
//! or moved; `invariants.count_parent_changed()` on the parent: rows
//! inserted or their count changed) and check each of them once, at COMMIT.
use std::cell::RefCell;
use std::collections::HashSet;
use std::ffi::CStr;

use pgrx::pg_sys::{self, Datum, Oid};
use pgrx::prelude::*;

use super::declare::{declare, required};
use super::spec::{RequireCount, RuleSpec};
use crate::catalog::{self, column_arg, first_row, quote_ident, spi, table_arg, Regclass, Table, Value};
use crate::errors::{trigger_data, Code, InvariantError};
use crate::privilege::as_table_owner;
use crate::privilege::pinned;
use crate::relcache;
use crate::tuple::{ColumnReader, Row};

/// `parent.count_column` must equal the number of `child` rows whose
/// `fk_column` (one column, or several separated by commas) references it.
#[pg_extern(schema = "invariants")]
fn require_count(
    parent: Option<Regclass>,
    count_column: Option<&str>,
    child: Option<Regclass>,
    fk_column: Option<&str>,
    name: default!(Option<&str>, "NULL"),
) -> String {
    pinned(|| {
        let parent = table_arg(parent, "parent");
        let count_column = required(count_column, "count_column");
        let child = table_arg(child, "child");
        let fk_columns: Vec<String> = required(fk_column, "fk_column")
            .split(',')
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty())
            .collect();
        let name = name.map_or_else(|| format!("{count_column}_counts_{}", child.name), str::to_string);
        let spec = RuleSpec::RequireCount(RequireCount {
            count_column,
            child: child.qualified(),
            fk_columns,
            parent_columns: Vec::new(),
            message: None,
        });
        declare(&parent, &name, spec)
    })
}

/// Validates a `require_count` declaration on `parent` and fills in the
/// parent's key columns and the child's canonical name.
pub fn complete(parent: &Table, mut spec: RequireCount) -> Result<RequireCount, InvariantError> {
    let count = column_arg(parent, Some(&spec.count_column), "count_column");
    let counts = [pg_sys::INT2OID, pg_sys::INT4OID, pg_sys::INT8OID, pg_sys::NUMERICOID];
    if !counts.contains(&count.type_oid) {
        return Err(InvariantError::new(
            Code::ERRCODE_DATATYPE_MISMATCH,
            format!(
                "argument count_column: column \"{}\" is of type {}, not an integer",
                count.name, count.type_name
            ),
        ));
    }
    let child_oid = catalog::oid_of(&spec.child);
    let child = table_arg(child_oid.map(Regclass), "child");
    if spec.fk_columns.is_empty() {
        return Err(InvariantError::new(
            Code::ERRCODE_INVALID_PARAMETER_VALUE,
            "argument fk_column must name a column",
        ));
    }
    for fk in &spec.fk_columns {
        column_arg(&child, Some(fk), "fk_column");
    }
    if spec.parent_columns.is_empty() {
        spec.parent_columns = referenced_columns(&child, &spec.fk_columns, parent)
            .or_else(|| Some(catalog::key_columns(parent.oid)).filter(|k| k.len() == spec.fk_columns.len()))
            .ok_or_else(|| {
                InvariantError::new(
                    Code::ERRCODE_INVALID_FOREIGN_KEY,
                    format!(
                        "argument fk_column: no foreign key of {} on ({}) references {}, and its primary key does not match",
                        child.display(),
                        spec.fk_columns.join(", "),
                        parent.display()
                    ),
                )
                .hint("Add the foreign key, or give the parent a primary key with as many columns as fk_column names.")
            })?;
    }
    for column in &spec.parent_columns {
        column_arg(parent, Some(column), "parent key");
    }
    if spec.message.as_deref().is_some_and(|m| m.trim().is_empty()) {
        return Err(InvariantError::new(
            Code::ERRCODE_INVALID_PARAMETER_VALUE,
            "argument message must not be empty",
        ));
    }
    spec.child = child.qualified();
    Ok(spec)
}

/// The parent columns that a foreign key of `child` on exactly `fk_columns`
/// references, in the order of `fk_columns`.
fn referenced_columns(child: &Table, fk_columns: &[String], parent: &Table) -> Option<Vec<String>> {
    let pairs: Vec<(Vec<String>, Vec<String>)> = Spi::connect(|client| {
        let rows = spi(client.select(
            "SELECT ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(n, i)
                            JOIN pg_catalog.pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i),
                    ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY k(n, i)
                            JOIN pg_catalog.pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.i)
               FROM pg_catalog.pg_constraint c
              WHERE c.contype = 'f' AND c.conrelid = $1 AND c.confrelid = $2",
            None,
            &[child.oid.into(), parent.oid.into()],
        ));
        rows.map(|row| {
            (
                spi(row.get::<Vec<String>>(1)).unwrap_or_default(),
                spi(row.get::<Vec<String>>(2)).unwrap_or_default(),
            )
        })
        .collect()
    });
    pairs.into_iter().find_map(|(fk, pk)| {
        let wanted: HashSet<&String> = fk_columns.iter().collect();
        if fk.len() != fk_columns.len() || fk.iter().collect::<HashSet<_>>() != wanted {
            return None;
        }
        fk_columns
            .iter()
            .map(|c| fk.iter().position(|f| f == c).map(|i| pk[i].clone()))
            .collect()
    })
}

/// The rule's trigger on the parent (`on_child` false) or the child; the
/// child's names the parent too, since a child may count for several.
/// Cut to the 63 bytes Postgres keeps of a name.
fn trigger_name(parent: &Table, rule: &str, on_child: bool) -> String {
    let mut name = if on_child {
        format!("invariants_count_{}_{rule}", parent.name)
    } else {
        format!("invariants_count_{rule}")
    };
    while name.len() > 63 {
        name.pop();
    }
    name
}

/// Creates the rule's constraint triggers on the parent and the child.
pub fn install_triggers(parent: &Table, rule: &str, spec: &RequireCount) {
    let name = quote_ident(&trigger_name(parent, rule, false));
    let child_name = quote_ident(&trigger_name(parent, rule, true));
    let rule_arg = catalog::quote_literal(rule);
    spi(Spi::run(&format!(
        "CREATE CONSTRAINT TRIGGER {name} AFTER INSERT OR UPDATE OF {} ON {}
         DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION invariants.count_parent_changed({rule_arg})",
        quote_ident(&spec.count_column),
        parent.qualified()
    )));
    let fks = spec
        .fk_columns
        .iter()
        .map(|c| quote_ident(c))
        .collect::<Vec<_>>()
        .join(", ");
    spi(Spi::run(&format!(
        "CREATE CONSTRAINT TRIGGER {child_name} AFTER INSERT OR DELETE OR UPDATE OF {fks} ON {}
         DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION invariants.count_child_changed({rule_arg}, {})",
        spec.child,
        catalog::quote_literal(&parent.qualified())
    )));
}

/// Drops the rule's constraint triggers, where they still exist.
pub fn drop_triggers(parent: &Table, rule: &str, spec: &RequireCount) {
    let child = catalog::oid_of(&spec.child).and_then(Table::lookup);
    crate::guards::guard_drop::drop_own_trigger(parent, &trigger_name(parent, rule, false));
    if let Some(child) = child {
        crate::guards::guard_drop::drop_own_trigger(&child, &trigger_name(parent, rule, true));
    }
}

pgrx::extension_sql!(
    r#"
CREATE FUNCTION invariants.count_child_changed() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'count_child_changed';
CREATE FUNCTION invariants.count_parent_changed() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'count_parent_changed';
"#,
    name = "count_triggers",
    requires = ["schema"]
);

crate::trigger_function!(count_child_changed, pg_finfo_count_child_changed, child_changed);
crate::trigger_function!(count_parent_changed, pg_finfo_count_parent_changed, parent_changed);

/// One count rule, compiled for the relation whose trigger fires.
struct CompiledCount {
    name: String,
    parent: Table,
    child: Table,
    spec: RequireCount,
    /// Reads the parent key from a row of the firing relation (the child's
    /// fk columns, or the parent's key columns), with each column's type.
    key: Vec<(ColumnReader, Oid)>,
    /// The parent's claimed count, by key `$1, $2, ...`; read as the
    /// parent's owner.
    claimed_sql: String,
    /// The number of child rows of the key; read as the child's owner.
    actual_sql: String,
}

/// The count rules whose triggers fire on one relation, by rule name.
struct CountRules(Vec<CompiledCount>);

/// The operators that compare the parent's key with the child's fk columns
/// (parent type on the left): the foreign key's own, or, without one, each
/// column type's equality. None when a pair has none.
fn key_operators(parent: &Table, spec: &RequireCount, child: &Table) -> Option<Vec<Oid>> {
    let from_foreign_key = spi(Spi::get_one_with_args::<Vec<Oid>>(
        "SELECT ARRAY(SELECT c.conpfeqop[i] FROM generate_subscripts(c.conkey, 1) i
                       JOIN pg_catalog.pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[i]
                      ORDER BY array_position($3::text[], a.attname::text))
           FROM pg_catalog.pg_constraint c
          WHERE c.contype = 'f' AND c.conrelid = $1 AND c.confrelid = $2
            AND (SELECT array_agg(a.attname::text ORDER BY a.attname)
                   FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey))
                = (SELECT array_agg(x ORDER BY x) FROM unnest($3::text[]) x)
          LIMIT 1",
        &[child.oid.into(), parent.oid.into(), spec.fk_columns.clone().into()],
    ));
    if let Some(operators) = from_foreign_key.filter(|ops| ops.len() == spec.fk_columns.len()) {
        return Some(operators);
    }
    let parent_columns = catalog::columns(parent.oid);
    let child_columns = catalog::columns(child.oid);
    spec.parent_columns
        .iter()
        .zip(&spec.fk_columns)
        .map(|(pk, fk)| {
            let pk = parent_columns.iter().find(|c| &c.name == pk)?;
            let fk = child_columns.iter().find(|c| &c.name == fk)?;
            // SAFETY: base-type lookups of existing types.
            let same = unsafe { pg_sys::getBaseType(pk.type_oid) == pg_sys::getBaseType(fk.type_oid) };
            same.then(|| catalog::equality_operator(pk.type_oid)).flatten()
        })
        .collect()
}

/// `a OP b AND ...` for each column pair and operator.
fn conjunction(pairs: impl Iterator<Item = (String, String, String)>) -> String {
    pairs
        .map(|(left, op, right)| format!("{left} {op} {right}"))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// Compiles the count rules whose triggers fire on `relid`: as the child,
/// every rule (of any parent) whose child is `relid` or a table above it;
/// as the parent, the rules declared on it or a table above it.
fn compile(relid: Oid, as_child: bool) -> Result<CountRules, InvariantError> {
    let lineage = catalog::self_and_ancestors(relid);
    let columns = catalog::columns(relid);
    let mut compiled = Vec::new();
    for rule in super::load(None)? {
        let RuleSpec::RequireCount(spec) = rule.spec else {
            continue;
        };
        let child_oid = catalog::oid_of(&spec.child);
        let side = if as_child { child_oid } else { Some(rule.tbl) };
        if !side.is_some_and(|oid| lineage.contains(&oid)) {
            continue;
        }
        let (Some(parent), Some(child)) = (Table::lookup(rule.tbl), child_oid.and_then(Table::lookup)) else {
            continue;
        };
        let broken = |problem: String| {
            InvariantError::new(Code::ERRCODE_UNDEFINED_COLUMN, problem)
                .hint(format!(
                    "Drop the rule with invariants.drop_rule('{}', '{}') and declare it again.",
                    parent.display(),
                    rule.name
                ))
                .table(&parent.schema, &parent.name)
                .constraint(&rule.name)
        };
        let key_names = if as_child {
            &spec.fk_columns
        } else {
            &spec.parent_columns
        };
        let key = key_names
            .iter()
            .map(|name| {
                columns
                    .iter()
                    .find(|c| &c.name == name)
                    .map(|c| (ColumnReader::new(c), c.type_oid))
                    .ok_or_else(|| {
                        broken(format!(
                            "rule \"{}\" reads column \"{name}\", which no longer exists",
                            rule.name
                        ))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let cross = key_operators(&parent, &spec, &child)
            .and_then(|ops| {
                ops.into_iter()
                    .map(catalog::qualified_operator)
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| {
                broken(format!(
                    "rule \"{}\" compares columns that have no equality operator",
                    rule.name
                ))
            })?;
        let same_type = |table: &Table, names: &[String]| -> Result<Vec<String>, InvariantError> {
            let table_columns = catalog::columns(table.oid);
            names
                .iter()
                .map(|n| {
                    table_columns
                        .iter()
                        .find(|c| &c.name == n)
                        .and_then(|c| catalog::equality_operator(c.type_oid))
                        .and_then(catalog::qualified_operator)
                        .ok_or_else(|| {
                            broken(format!(
                                "rule \"{}\" reads column \"{n}\", which has no equality operator",
                                rule.name
                            ))
                        })
                })
                .collect()
        };
        let param = |i: usize| format!("${}", i + 1);
        let parent_key = |i: usize| format!("p.{}", quote_ident(&spec.parent_columns[i]));
        let child_key = |i: usize| format!("c.{}", quote_ident(&spec.fk_columns[i]));
        let n = spec.parent_columns.len();
        let (by_parent, by_child) = if as_child {
            let fk_eq = same_type(&child, &spec.fk_columns)?;
            (
                conjunction((0..n).map(|i| (parent_key(i), cross[i].clone(), param(i)))),
                conjunction((0..n).map(|i| (child_key(i), fk_eq[i].clone(), param(i)))),
            )
        } else {
            let pk_eq = same_type(&parent, &spec.parent_columns)?;
            (
                conjunction((0..n).map(|i| (parent_key(i), pk_eq[i].clone(), param(i)))),
                conjunction((0..n).map(|i| (param(i), cross[i].clone(), child_key(i)))),
            )
        };
        compiled.push(CompiledCount {
            claimed_sql: format!(
                "SELECT p.{}::pg_catalog.int8 FROM {} p WHERE {by_parent}",
                quote_ident(&spec.count_column),
                parent.qualified()
            ),
            actual_sql: format!(
                "SELECT pg_catalog.count(*) FROM {} c WHERE {by_child}",
                child.qualified()
            ),
            name: rule.name,
            parent: parent.clone(),
            child,
            spec,
            key,
        });
    }
    Ok(CountRules(compiled))
}

/// The parents checked so far in this transaction, while nothing but these
/// checks has run since the last one (a later change of the same parent
/// queues another event after other commands, and is checked again).
struct Checked {
    xid: u64,
    command: pg_sys::CommandId,
    keys: HashSet<(Oid, String, Vec<Vec<u8>>)>,
}

thread_local! {
    static CHECKED: RefCell<Checked> = RefCell::new(Checked { xid: 0, command: 0, keys: HashSet::new() });
}

fn current_position() -> (u64, pg_sys::CommandId) {
    // SAFETY: the firing transaction changed rows, so it has a transaction
    // id; both calls only read the transaction state.
    unsafe {
        (
            pg_sys::GetTopFullTransactionId().value,
            pg_sys::GetCurrentCommandId(false),
        )
    }
}

fn trigger_args(trigger: &pg_sys::TriggerData) -> Vec<String> {
    // SAFETY: tgargs holds tgnargs C strings for the firing trigger.
    unsafe {
        let t = &*trigger.tg_trigger;
        (0..t.tgnargs as usize)
            .map(|i| CStr::from_ptr(*t.tgargs.add(i)).to_string_lossy().into_owned())
            .collect()
    }
}

fn child_changed(fcinfo: pg_sys::FunctionCallInfo) -> Result<Datum, InvariantError> {
    on_change(fcinfo, true)
}

fn parent_changed(fcinfo: pg_sys::FunctionCallInfo) -> Result<Datum, InvariantError> {
    on_change(fcinfo, false)
}

/// Marker types keep the child's and the parent's compiled rules apart in
/// the relation cache.
struct AsChild(Result<CountRules, InvariantError>);
struct AsParent(Result<CountRules, InvariantError>);

fn on_change(fcinfo: pg_sys::FunctionCallInfo, as_child: bool) -> Result<Datum, InvariantError> {
    // SAFETY: fcinfo is the one Postgres passed to this C function.
    let trigger = unsafe { trigger_data(fcinfo)? };
    let args = trigger_args(trigger);
    let (Some(rule), parent) = (args.first(), args.get(1)) else {
        return Err(InvariantError::new(
            Code::ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
            "pg_invariants count triggers need the rule name as their first argument",
        ));
    };
    // SAFETY: the trigger manager passes an open relation.
    let relid = unsafe { (*trigger.tg_relation).rd_id };
    let op = trigger.tg_event & pg_sys::TRIGGER_EVENT_OPMASK;
    let old = (trigger.tg_trigslot, trigger.tg_trigtuple);
    let new = (trigger.tg_newslot, trigger.tg_newtuple);
    let slots = match (op == pg_sys::TRIGGER_EVENT_UPDATE, as_child) {
        (true, true) => vec![old, new],
        (true, false) => vec![new],
        (false, _) => vec![old],
    };
    // SAFETY: the trigger manager's slots and tuples hold the rows until
    // this returns.
    let rows: Vec<Row> = slots.into_iter().map(|(s, t)| unsafe { Row::in_slot(s, t) }).collect();
    let check_rows = |rules: &CountRules| -> Result<(), InvariantError> {
        let Some(count) = rules
            .0
            .iter()
            .find(|c| &c.name == rule && parent.is_none_or(|p| *p == c.parent.qualified()))
        else {
            return Ok(());
        };
        for row in &rows {
            let key: Option<Vec<Value>> = count
                .key
                .iter()
                .map(|(reader, type_oid)| {
                    reader.datum(row).map(|datum| Value {
                        datum: Some(datum),
                        type_oid: *type_oid,
                    })
                })
                .collect();
            let image: Option<Vec<Vec<u8>>> = count.key.iter().map(|(reader, _)| reader.image(row)).collect();
            // A key with a NULL belongs to no parent.
            if let (Some(key), Some(image)) = (key, image) {
                let display: Vec<String> = count.key.iter().map(|(reader, _)| reader.display_plain(row)).collect();
                check_once(count, &key, image, &display)?;
            }
        }
        Ok(())
    };
    if as_child {
        let rules = relcache::get_or_build(relid, || AsChild(compile(relid, true)));
        check_rows(rules.0.as_ref().map_err(Clone::clone)?)?;
    } else {
        let rules = relcache::get_or_build(relid, || AsParent(compile(relid, false)));
        check_rows(rules.0.as_ref().map_err(Clone::clone)?)?;
    }
    Ok(Datum::from(0))
}

/// Checks one parent, unless it was checked already in this firing.
fn check_once(
    count: &CompiledCount,
    key: &[Value],
    image: Vec<Vec<u8>>,
    display: &[String],
) -> Result<(), InvariantError> {
    let id = (count.parent.oid, count.name.clone(), image);
    let position = current_position();
    let seen = CHECKED.with(|checked| {
        let mut checked = checked.borrow_mut();
        if (checked.xid, checked.command) != position {
            checked.keys.clear();
            checked.xid = position.0;
        }
        checked.keys.contains(&id)
    });
    if seen {
        return Ok(());
    }
    crate::privilege::pinned(|| check(count, key, display))?;
    let after = current_position();
    CHECKED.with(|checked| {
        let mut checked = checked.borrow_mut();
        checked.command = after.1;
        checked.keys.insert(id);
    });
    Ok(())
}

/// Compares the parent's claim with its children, on a snapshot taken now
/// (READ COMMITTED) or the transaction's (REPEATABLE READ and above). Each
/// table is read as its owner with row-level security off, so the verdict
/// counts every row whoever commits.
fn check(count: &CompiledCount, key: &[Value], display: &[String]) -> Result<(), InvariantError> {
    let args: Vec<_> = key.iter().map(Value::arg).collect();
    let claim = as_table_owner(count.parent.oid, || first_row(&count.claimed_sql, &args));
    let Some(claimed) = claim.first() else {
        return Ok(()); // the parent is gone
    };
    let actual = as_table_owner(count.child.oid, || {
        spi(Spi::get_one_with_args::<i64>(&count.actual_sql, &args))
    })
    .unwrap_or(0);
    // SAFETY: an int8 datum, by value.
    let claimed = claimed.datum.map(|d| d.value() as i64);
    if claimed == Some(actual) {
        return Ok(());
    }
    let claimed_text = claimed.map_or("NULL".to_string(), |c| c.to_string());
    let message = count.spec.message.clone().unwrap_or_else(|| {
        format!(
            "row of relation \"{}\" violates rule \"{}\"",
            count.parent.name, count.name
        )
    });
    Err(InvariantError::new(Code::ERRCODE_CHECK_VIOLATION, message)
        .detail(format!(
            "Key ({})=({}) claims {} = {claimed_text}, but {} holds {actual} rows for it.",
            count.spec.parent_columns.join(", "),
            display.join(", "),
            count.spec.count_column,
            count.child.display()
        ))
        .hint(format!(
            "Insert or delete the {} rows in the same transaction as the change of {}, or set {} to the real count.",
            count.child.name, count.spec.count_column, count.spec.count_column
        ))
        .table(&count.parent.schema, &count.parent.name)
        .constraint(&count.name))
}

/// A count rule ready for detection over the whole parent table.
pub struct CountCheck {
    pub count_column: String,
    pub parent_columns: Vec<String>,
    child: Table,
    /// The types of the parent's key columns.
    key_types: Vec<Oid>,
    /// Per key `$1[i], $2[i], ...`, in order: its number of child rows.
    counts_sql: String,
}

/// Compiles `spec`, declared on `parent`, for detection; the problem when
/// its tables or columns no longer fit it.
pub fn count_check(parent: &Table, rule: &str, spec: &RequireCount) -> Result<CountCheck, String> {
    let child = catalog::oid_of(&spec.child)
        .and_then(Table::lookup)
        .ok_or_else(|| format!("rule \"{rule}\" counts rows of {}, which no longer exists", spec.child))?;
    let parent_columns = catalog::columns(parent.oid);
    let key_types = spec
        .parent_columns
        .iter()
        .map(|name| parent_columns.iter().find(|c| &c.name == name).map(|c| c.type_oid))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| {
            format!(
                "rule \"{rule}\" reads a key column of {} that no longer exists",
                parent.display()
            )
        })?;
    let operators = key_operators(parent, spec, &child)
        .and_then(|ops| {
            ops.into_iter()
                .map(catalog::qualified_operator)
                .collect::<Option<Vec<_>>>()
        })
        .ok_or_else(|| format!("rule \"{rule}\" compares columns that have no equality operator"))?;
    let n = spec.parent_columns.len();
    let names: Vec<String> = (1..=n).map(|i| format!("k{i}")).collect();
    let params: Vec<String> = (1..=n).map(|i| format!("pg_catalog.unnest(${i})")).collect();
    let matches = conjunction((0..n).map(|i| {
        (
            format!("k.{}", names[i]),
            operators[i].clone(),
            format!("c.{}", quote_ident(&spec.fk_columns[i])),
        )
    }));
    let counts_sql = format!(
        "SELECT (SELECT pg_catalog.count(*) FROM {} c WHERE {matches})
           FROM ROWS FROM ({}) WITH ORDINALITY AS k({}, n) ORDER BY k.n",
        child.qualified(),
        params.join(", "),
        names.join(", ")
    );
    Ok(CountCheck {
        count_column: spec.count_column.clone(),
        parent_columns: spec.parent_columns.clone(),
        child,
        key_types,
        counts_sql,
    })
}

impl CountCheck {
    /// The number of child rows of each key (the parent's key column values,
    /// in order), read as the child's owner.
    pub fn child_counts(&self, keys: &[Vec<Value>]) -> Vec<i64> {
        let arrays: Vec<Value> = self
            .key_types
            .iter()
            .enumerate()
            .map(|(i, type_oid)| {
                let column: Vec<Option<pg_sys::Datum>> = keys.iter().map(|k| k.get(i).and_then(|v| v.datum)).collect();
                catalog::array_of(*type_oid, &column)
            })
            .collect();
        let args: Vec<_> = arrays.iter().map(Value::arg).collect();
        as_table_owner(self.child.oid, || {
            Spi::connect(|client| {
                let rows = spi(client.select(&self.counts_sql, None, &args));
                rows.map(|row| spi(row.get::<i64>(1)).unwrap_or(0)).collect()
            })
        })
    }
}
