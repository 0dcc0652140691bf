//! Cross-table counts (incident 2): `invariants.require_count` declares
//! that a parent's count column equals the number of its child rows.
//!
//! Two row triggers note every parent a transaction touches
//! (`invariants.count_child_changed()` on the child: rows inserted, deleted
//! or moved; `invariants.count_parent_changed()` on the parent: rows
//! inserted or their count changed), and each noted parent is checked once,
//! when the transaction commits (or is prepared), after its deferred
//! constraints. Noting is all a trigger does: the checks read the parent as
//! its owner and the child as its owner, whoever commits.
use std::cell::RefCell;
use std::collections::HashSet;
use std::ffi::CStr;

use pg_invariants_core::count_sql::{self, conjunction, param};
use pg_invariants_core::triggers;
use pgrx::pg_sys::{self, Datum, Oid};
use pgrx::prelude::*;

use super::declare::{declare, required};
use super::spec::{RequireCount, RuleSpec};
use crate::catalog::{self, column_arg, quote_ident, quote_literal, spi, table_arg, Regclass, Table, Value};
use crate::errors::{trigger_data, Code, InvariantError};
use crate::privilege::{as_table_owner, pinned};
use crate::registry::{self, Trigger};
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
    let count = column_arg(parent, &spec.count_column, "count_column");
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
    let Some(child_oid) = catalog::oid_of(&spec.child) else {
        // untestable: the callers resolve the child table before
        return Err(InvariantError::new(
            Code::ERRCODE_UNDEFINED_TABLE,
            format!("argument child: table {} does not exist", quote_literal(&spec.child)),
        ));
    };
    let child = table_arg(Some(Regclass(child_oid)), "child");
    if spec.fk_columns.is_empty() {
        return Err(InvariantError::new(
            Code::ERRCODE_INVALID_PARAMETER_VALUE,
            "argument fk_column must name a column",
        ));
    }
    for fk in &spec.fk_columns {
        column_arg(&child, fk, "fk_column");
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
    if spec.parent_columns.len() != spec.fk_columns.len() {
        return Err(InvariantError::new(
            Code::ERRCODE_INVALID_FOREIGN_KEY,
            format!(
                "argument fk_column: {} columns of {} cannot reference the {} key columns of {}",
                spec.fk_columns.len(),
                child.display(),
                spec.parent_columns.len(),
                parent.display()
            ),
        ));
    }
    for column in &spec.parent_columns {
        column_arg(parent, column, "parent key");
    }
    if key_operators(parent, &spec, &child).is_none() {
        return Err(InvariantError::new(
            Code::ERRCODE_DATATYPE_MISMATCH,
            format!(
                "argument fk_column: the types of {}'s ({}) do not match {}'s key ({})",
                child.display(),
                spec.fk_columns.join(", "),
                parent.display(),
                spec.parent_columns.join(", ")
            ),
        )
        .hint("Compare columns of the same type, or declare a foreign key between them."));
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

/// The trigger that notes parents changed on the parent.
pub fn parent_trigger(rule: &str) -> String {
    triggers::COUNT_PARENT.for_rule(rule).name
}

/// The trigger that notes parents whose children changed, on the child
/// (one per rule name: it serves every parent whose rule has that name).
pub fn child_trigger(rule: &str) -> String {
    triggers::COUNT_CHILD.for_rule(rule).name
}

/// The triggers that note touched parents: on a table counted by rules
/// (as a parent, declared on it or a table above it), one per rule; on a
/// counted child (or a table below one), one per rule name, firing on the fk
/// columns of every rule of that name.
pub fn triggers(_relid: Oid, lineage: &[Oid]) -> Vec<Trigger> {
    let rules = super::load(None).unwrap_or_default();
    let mut triggers = Vec::new();
    let mut child_columns: Vec<(String, Vec<String>)> = Vec::new();
    for rule in rules {
        let RuleSpec::RequireCount(spec) = rule.spec else {
            continue;
        };
        if lineage.contains(&rule.tbl) {
            triggers.push(Trigger {
                columns: vec![spec.count_column.clone()],
                ..triggers::COUNT_PARENT.for_rule(&rule.name)
            });
        }
        if catalog::oid_of(&spec.child).is_some_and(|child| lineage.contains(&child)) {
            match child_columns.iter_mut().find(|(name, _)| *name == rule.name) {
                Some((_, columns)) => columns.extend(spec.fk_columns),
                None => child_columns.push((rule.name, spec.fk_columns)),
            }
        }
    }
    for (rule, mut columns) in child_columns {
        columns.sort();
        columns.dedup();
        triggers.push(Trigger {
            columns,
            ..triggers::COUNT_CHILD.for_rule(&rule)
        });
    }
    triggers
}

/// Makes the triggers of the rule's parent and child follow the rules.
pub fn sync_triggers(parent: &Table, spec: &RequireCount) {
    registry::sync_tree(parent.oid);
    if let Some(child) = catalog::oid_of(&spec.child) {
        registry::sync_tree(child);
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

crate::c_function!(count_child_changed, pg_finfo_count_child_changed, child_changed);
crate::c_function!(count_parent_changed, pg_finfo_count_parent_changed, parent_changed);

/// One count rule, compiled for the relation whose trigger fires.
struct CompiledCount {
    name: String,
    parent: Table,
    child: Table,
    spec: RequireCount,
    /// Reads the parent key from a row of the firing relation (the child's
    /// fk columns, or the parent's key columns), with each column's type,
    /// length and passing.
    key: Vec<KeyColumn>,
    /// The parent's claimed count, by key `$1, $2, ...`; read as the
    /// parent's owner.
    claimed_sql: String,
    /// The number of child rows of the key; read as the child's owner.
    actual_sql: String,
}

struct KeyColumn {
    reader: ColumnReader,
    type_oid: Oid,
    typlen: i16,
    typbyval: bool,
}

/// The count rules whose triggers fire on one relation.
struct CountRules(Vec<CompiledCount>);

/// The operators that compare the parent's key with the child's fk columns
/// (parent type on the left): the foreign key's own, or, without one, each
/// column type's equality. None when a pair has none.
fn key_operators(parent: &Table, spec: &RequireCount, child: &Table) -> Option<Vec<Oid>> {
    let from_foreign_key = crate::sql::one::<Vec<Oid>>(
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
    );
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
        let parent = Table::lookup(rule.tbl);
        let broken = |problem: String| {
            let mut error = InvariantError::new(Code::ERRCODE_UNDEFINED_COLUMN, problem).constraint(&rule.name);
            if let Some(parent) = &parent {
                error = error
                    .hint(format!(
                        "Drop the rule with invariants.drop_rule('{}', '{}') and declare it again.",
                        parent.display(),
                        rule.name
                    ))
                    .table(&parent.schema, &parent.name);
            }
            error
        };
        let (Some(parent), Some(child)) = (parent.clone(), child_oid.and_then(Table::lookup)) else {
            return Err(broken(format!(
                "rule \"{}\" counts rows of {}, which no longer exists",
                rule.name, spec.child
            )));
        };
        let key_names = if as_child {
            &spec.fk_columns
        } else {
            &spec.parent_columns
        };
        let key = key_names
            .iter()
            .map(|name| {
                let column = columns.iter().find(|c| &c.name == name).ok_or_else(|| {
                    broken(format!(
                        "rule \"{}\" reads column \"{name}\", which no longer exists",
                        rule.name
                    ))
                })?;
                let (mut typlen, mut typbyval) = (0i16, false);
                // SAFETY: a catalog lookup of an existing type, into locals.
                unsafe { pg_sys::get_typlenbyval(column.type_oid, &mut typlen, &mut typbyval) };
                Ok(KeyColumn {
                    reader: ColumnReader::new(column),
                    type_oid: column.type_oid,
                    typlen,
                    typbyval,
                })
            })
            .collect::<Result<Vec<_>, InvariantError>>()?;
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
            claimed_sql: count_sql::claimed(&spec.count_column, &parent.qualified(), &by_parent),
            actual_sql: count_sql::actual(&child.qualified(), &by_child),
            name: rule.name,
            parent,
            child,
            spec,
            key,
        });
    }
    Ok(CountRules(compiled))
}

/// A parent a transaction touched, to check when it commits.
struct Touched {
    /// The relation whose trigger noted it, and on which side.
    relid: Oid,
    as_child: bool,
    rule: String,
    parent: Oid,
    /// The key's values, copied into the transaction's memory.
    key: Vec<Value>,
    subxact: pg_sys::SubTransactionId,
}

thread_local! {
    static TOUCHED: RefCell<Vec<Touched>> = const { RefCell::new(Vec::new()) };
    // Each parent once: (parent, rule, the key's images as `note` lays them out).
    static SEEN: RefCell<HashSet<(Oid, String, Vec<u8>)>> = RefCell::new(HashSet::new());
    static LAST: RefCell<LastNoted> = RefCell::new(LastNoted::default());
}

/// The parent noted last, and a buffer for the next key's image.
#[derive(Default)]
struct LastNoted {
    parent: Oid,
    rule: String,
    image: Vec<u8>,
    scratch: Vec<u8>,
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

fn compiled(
    relid: Oid,
    as_child: bool,
) -> Result<std::rc::Rc<dyn std::ops::Deref<Target = Result<CountRules, InvariantError>>>, InvariantError> {
    Ok(if as_child {
        relcache::get_or_build(relid, || AsChild(compile(relid, true)))
    } else {
        relcache::get_or_build(relid, || AsParent(compile(relid, false)))
    })
}

impl std::ops::Deref for AsChild {
    type Target = Result<CountRules, InvariantError>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::Deref for AsParent {
    type Target = Result<CountRules, InvariantError>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// Notes the parents of the changed row (for a moved child, of both rows).
fn on_change(fcinfo: pg_sys::FunctionCallInfo, as_child: bool) -> Result<Datum, InvariantError> {
    // SAFETY: fcinfo is the one Postgres passed to this C function.
    let trigger = unsafe { trigger_data(fcinfo)? };
    let args = trigger_args(trigger);
    let Some(rule) = args.first() else {
        return Err(InvariantError::new(
            Code::ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
            "pg_invariants count triggers need the rule name as their argument",
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
    let rules = compiled(relid, as_child)?;
    let rules = (**rules).as_ref().map_err(Clone::clone)?;
    for count in rules.0.iter().filter(|c| &c.name == rule) {
        for row in &rows {
            note(relid, as_child, count, row);
        }
    }
    Ok(Datum::from(0))
}

/// Notes the parent of `row` for `count`, once per transaction.
fn note(relid: Oid, as_child: bool, count: &CompiledCount, row: &Row) {
    // The key's images, each after its length. A bulk import touches the
    // same parent row after row: compared with the last one noted first,
    // with no allocation.
    let repeated = LAST.with(|last| {
        let mut last = last.borrow_mut();
        let mut image = std::mem::take(&mut last.scratch);
        image.clear();
        for k in &count.key {
            match k.reader.datum(row) {
                // SAFETY: a non-null value of the key column's type.
                Some(d) => unsafe {
                    crate::tuple::with_datum_image(d, k.typlen, k.typbyval, |bytes| {
                        image.extend_from_slice(&(bytes.len() as u32).to_ne_bytes());
                        image.extend_from_slice(bytes);
                    })
                },
                // A key with a NULL belongs to no parent.
                None => {
                    last.scratch = image;
                    return None;
                }
            }
        }
        let same = last.parent == count.parent.oid && last.rule == count.name && last.image == image;
        let noted = if same {
            None
        } else {
            last.parent = count.parent.oid;
            last.rule.clone_from(&count.name);
            last.image.clone_from(&image);
            Some(last.image.clone())
        };
        last.scratch = image;
        Some((same, noted.unwrap_or_default()))
    });
    let Some((same, image)) = repeated else { return };
    if same || !SEEN.with(|seen| seen.borrow_mut().insert((count.parent.oid, count.name.clone(), image))) {
        return;
    }
    // SAFETY: values of the key columns, copied into the transaction's
    // memory, which outlives the note (dropped at the transaction's end).
    let key = unsafe {
        let previous = pg_sys::MemoryContextSwitchTo(pg_sys::TopTransactionContext);
        let key = count
            .key
            .iter()
            .map(|k| Value {
                datum: k
                    .reader
                    .datum(row)
                    .map(|d| crate::tuple::copy_datum(d, k.typlen, k.typbyval)),
                type_oid: k.type_oid,
            })
            .collect();
        pg_sys::MemoryContextSwitchTo(previous);
        key
    };
    // SAFETY: reads the current subtransaction's id.
    let subxact = unsafe { pg_sys::GetCurrentSubTransactionId() };
    TOUCHED.with(|t| {
        t.borrow_mut().push(Touched {
            relid,
            as_child,
            rule: count.name.clone(),
            parent: count.parent.oid,
            key,
            subxact,
        })
    });
}

/// Forgets what an aborted subtransaction noted (its rows are gone).
pub fn forget_subxact(subxact: pg_sys::SubTransactionId) {
    TOUCHED.with(|t| t.borrow_mut().retain(|e| e.subxact < subxact));
    LAST.with(|last| *last.borrow_mut() = LastNoted::default());
    SEEN.with(|seen| seen.borrow_mut().clear());
    TOUCHED.with(|t| {
        let t = t.borrow();
        SEEN.with(|seen| {
            let mut seen = seen.borrow_mut();
            for e in t.iter() {
                seen.insert((e.parent, e.rule.clone(), key_image(&e.key)));
            }
        })
    });
}

/// The images of a noted key, laid out as `note` lays them out.
fn key_image(key: &[Value]) -> Vec<u8> {
    let mut image = Vec::new();
    for v in key {
        let (mut typlen, mut typbyval) = (0i16, false);
        // SAFETY: a catalog lookup of an existing type, and the image of a
        // non-null value of it.
        unsafe {
            pg_sys::get_typlenbyval(v.type_oid, &mut typlen, &mut typbyval);
            if let Some(d) = v.datum {
                crate::tuple::with_datum_image(d, typlen, typbyval, |bytes| {
                    image.extend_from_slice(&(bytes.len() as u32).to_ne_bytes());
                    image.extend_from_slice(bytes);
                });
            }
        }
    }
    image
}

/// True when the transaction touched a counted parent: COMMIT has checks
/// to run.
pub fn anything_touched() -> bool {
    TOUCHED.with(|t| !t.borrow().is_empty())
}

pub fn forget_all() {
    TOUCHED.with(|t| t.borrow_mut().clear());
    SEEN.with(|seen| seen.borrow_mut().clear());
    LAST.with(|last| *last.borrow_mut() = LastNoted::default());
}

crate::c_function!(check_counts, pg_finfo_check_counts, check_counts_body);

pgrx::extension_sql!(
    r#"
CREATE FUNCTION invariants.check_counts() RETURNS void
    LANGUAGE c AS 'MODULE_PATHNAME', 'check_counts';
COMMENT ON FUNCTION invariants.check_counts() IS
    'Checks now the count rules of the parents this transaction touched so far, as COMMIT will.';
"#,
    name = "check_counts",
    requires = ["schema"]
);

/// `invariants.check_counts()`: checks now the parents this transaction
/// touched so far, as COMMIT will (later changes are checked again then).
fn check_counts_body(_fcinfo: pg_sys::FunctionCallInfo) -> Result<Datum, InvariantError> {
    check_touched()?;
    Ok(Datum::from(0))
}

/// Checks every parent the transaction touched; called as it commits or is
/// prepared. Each is checked once; the notes are dropped either way.
pub fn check_touched() -> Result<(), InvariantError> {
    let touched = TOUCHED.with(|t| std::mem::take(&mut *t.borrow_mut()));
    SEEN.with(|seen| seen.borrow_mut().clear());
    LAST.with(|last| *last.borrow_mut() = LastNoted::default());
    if touched.is_empty() {
        return Ok(());
    }
    let _snapshot = ActiveSnapshot::ensure();
    pinned(|| {
        for entry in &touched {
            let rules = compiled(entry.relid, entry.as_child)?;
            let rules = (**rules).as_ref().map_err(Clone::clone)?;
            let Some(count) = rules
                .0
                .iter()
                .find(|c| c.name == entry.rule && c.parent.oid == entry.parent)
            else {
                continue; // the rule was dropped since
            };
            check(count, &entry.key)?;
        }
        Ok(())
    })
}

/// A snapshot pushed for queries run where none is active (as a
/// transaction commits), popped when dropped.
struct ActiveSnapshot(bool);

impl ActiveSnapshot {
    fn ensure() -> ActiveSnapshot {
        // SAFETY: pushes the transaction's snapshot only when none is
        // active; Drop pops exactly what was pushed.
        unsafe {
            if pg_sys::ActiveSnapshotSet() {
                return ActiveSnapshot(false);
            }
            pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
        }
        ActiveSnapshot(true)
    }
}

impl Drop for ActiveSnapshot {
    fn drop(&mut self) {
        if self.0 {
            // SAFETY: pops the snapshot `ensure` pushed.
            unsafe { pg_sys::PopActiveSnapshot() };
        }
    }
}

/// Compares the parent's claim with its children, on a snapshot taken now
/// (READ COMMITTED) or the transaction's (REPEATABLE READ and above). Each
/// table is read as its owner with row-level security off, so the verdict
/// counts every row whoever commits.
fn check(count: &CompiledCount, key: &[Value]) -> Result<(), InvariantError> {
    let args: Vec<_> = key.iter().map(Value::arg).collect();
    // The claim and the children read in one snapshot: a transaction that
    // commits between two reads must not make a wrong verdict.
    let (claim, actual) = crate::sql::in_one_snapshot(|| {
        let claim = as_table_owner(count.parent.oid, || {
            catalog::first_row_in_snapshot(&count.claimed_sql, &args)
        });
        let actual = as_table_owner(count.child.oid, || {
            crate::sql::one_in_snapshot::<i64>(&count.actual_sql, &args)
        });
        (claim, actual.unwrap_or(0))
    });
    let Some(claimed) = claim.first() else {
        return Ok(()); // the parent is gone
    };
    let claimed = claimed.datum.map(|d| d.value() as i64);
    if claimed == Some(actual) {
        return Ok(());
    }
    let claimed_text = claimed.map_or("NULL".to_string(), |c| c.to_string());
    let display: Vec<String> = as_table_owner(count.parent.oid, || key.iter().map(catalog::display_value).collect());
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
    let counts_sql = count_sql::batch_counts(&child.qualified(), &spec.fk_columns, &operators);
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
