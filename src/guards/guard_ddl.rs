//! Event triggers: no DDL takes rows out of a guarded table (protected,
//! audited or soft-delete) or switches off the extension's triggers, unless
//! the table's owner allows it (`SET LOCAL invariants.allow_drop = on`); what
//! the switch lets through is recorded in the audit log (op `DROP`).
//!
//! - `invariants.guard_ddl_start()`, at `ddl_command_start`, reads the
//!   statement before it runs: `ALTER TABLE ... ALTER COLUMN ... TYPE` (a
//!   rewrite, `USING` whatever), `DETACH PARTITION` and `NO INHERIT` of a
//!   guarded table are refused there, and before any DROP it notes which
//!   tables are protected (their partitions and children included), since
//!   `sql_drop` no longer sees where a dropped table belonged.
//! - `invariants.guard_drop()`, at `sql_drop`, sees every object a command
//!   removed, `DROP ... CASCADE` included: dropping a protected table (or a
//!   partition or child of one), one of its columns or column defaults, or
//!   one of the extension's triggers on any table is refused.
//! - `invariants.guard_alter()`, at `ddl_command_end`, looks at every table
//!   the command touched: a partition or inheritance child created or
//!   attached under a covered table gets its triggers (see `registry`); a
//!   trigger of the extension's renamed, replaced, disabled or set to another
//!   firing mode, or a guarded table made UNLOGGED, is refused.
//!
//! The event triggers fire in every session replication role (ENABLE
//! ALWAYS): a session in `replica` mode gets no way around them.
use std::cell::{Cell, RefCell};

use pgrx::pg_sys::{self, Datum, Oid};
use pgrx::prelude::*;
use pgrx::PgList;

use super::{is_protected, switch_allows};
use crate::audit_log::record_event;
use crate::catalog::{self, spi, Table};
use crate::errors::{Code, InvariantError};
use crate::guc::ALLOW_DROP;
use crate::privilege::{as_extension_owner, pinned};
use crate::registry;

thread_local! {
    // Set while the extension itself changes its triggers (drop_rule,
    // disable_audit, ...); nothing a user runs can set it.
    static INTERNAL: Cell<bool> = const { Cell::new(false) };
    // The protected tables (with their partitions and children) as they
    // were when the DROP now running started.
    static PROTECTED_BEFORE_DROP: RefCell<Vec<Oid>> = const { RefCell::new(Vec::new()) };
    // Tables whose triggers of the extension's the command now running
    // dropped along with something else (a column, say).
    static LOST_TRIGGERS: RefCell<Vec<Oid>> = const { RefCell::new(Vec::new()) };
    // One entry per DDL command running (nested ones on top): whether it
    // puts a table into a hierarchy (CREATE TABLE ... PARTITION OF or
    // INHERITS, ATTACH PARTITION, INHERIT).
    static JOINING: RefCell<Vec<bool>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` while the guards let the extension change its own triggers.
pub fn internally<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            INTERNAL.with(|i| i.set(self.0));
        }
    }
    let _reset = Reset(INTERNAL.with(|i| i.replace(true)));
    f()
}

/// Drops one of the extension's triggers on `table`, if it is there.
pub fn drop_own_trigger(table: &Table, name: &str) {
    if catalog::has_trigger(table.oid, name) {
        let sql = format!("DROP TRIGGER {} ON {}", catalog::quote_ident(name), table.qualified());
        internally(|| spi(Spi::run(&sql)));
    }
}

pgrx::extension_sql!(
    r#"
CREATE FUNCTION invariants.guard_drop() RETURNS event_trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'guard_drop';
CREATE FUNCTION invariants.guard_alter() RETURNS event_trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'guard_alter';
CREATE FUNCTION invariants.guard_ddl_start() RETURNS event_trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'guard_ddl_start';
CREATE EVENT TRIGGER invariants_guard_drop ON sql_drop EXECUTE FUNCTION invariants.guard_drop();
CREATE EVENT TRIGGER invariants_guard_alter ON ddl_command_end EXECUTE FUNCTION invariants.guard_alter();
CREATE EVENT TRIGGER invariants_guard_ddl_start ON ddl_command_start EXECUTE FUNCTION invariants.guard_ddl_start();
ALTER EVENT TRIGGER invariants_guard_drop ENABLE ALWAYS;
ALTER EVENT TRIGGER invariants_guard_alter ENABLE ALWAYS;
ALTER EVENT TRIGGER invariants_guard_ddl_start ENABLE ALWAYS;
"#,
    name = "guard_event_triggers",
    requires = ["schema"]
);

crate::c_function!(guard_drop, pg_finfo_guard_drop, guard_drop_body);
crate::c_function!(guard_alter, pg_finfo_guard_alter, guard_alter_body);
crate::c_function!(guard_ddl_start, pg_finfo_guard_ddl_start, guard_ddl_start_body);

/// The event trigger data Postgres passed, or an error if called another way.
fn event_data<'a>(fcinfo: pg_sys::FunctionCallInfo) -> Result<&'a pg_sys::EventTriggerData, InvariantError> {
    // SAFETY: fcinfo is the one Postgres passed; context is NULL or a node,
    // an EventTriggerData when an event trigger fires.
    unsafe {
        let context = (*fcinfo).context;
        if !context.is_null() && (*context).type_ == pg_sys::NodeTag::T_EventTriggerData {
            return Ok(&*(context as *const pg_sys::EventTriggerData));
        }
    }
    // untestable: Postgres refuses to call an event trigger function other than as one
    Err(InvariantError::new(
        Code::ERRCODE_E_R_I_E_EVENT_TRIGGER_PROTOCOL_VIOLATED,
        "this function can only be called as an event trigger",
    ))
}

/// True when the extension is being dropped (or is not installed in this
/// database any more): nothing is left to guard.
fn extension_gone() -> bool {
    // Also while the database's catalog is another version's than this
    // library's: between installing a new version and ALTER EXTENSION
    // UPDATE (and while that runs), the guards stand aside rather than
    // read tables that are not yet what they expect.
    crate::sql::one::<bool>(
        "SELECT NOT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'pg_invariants' AND extversion = $1)
             OR pg_catalog.to_regclass('invariants.protected_tables') IS NULL",
        &[env!("CARGO_PKG_VERSION").into()],
    ) == Some(true)
}

/// A table whose rows no DDL may take without the owner's switch: audited,
/// protected or soft-delete (itself or through a table above it).
fn guarded(relid: Oid) -> bool {
    crate::table_config::TableConfig::of(relid).keeps_rows()
}

/// The refusal of `what` on `table`, unless its owner allows it: then the
/// change is recorded, and Ok.
fn refuse_unless_allowed(what: &str, table: &Table, why: &str) -> Result<(), InvariantError> {
    if INTERNAL.with(Cell::get) {
        return Ok(());
    }
    if !ALLOW_DROP.get() {
        return Err(InvariantError::new(
            Code::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("{what} of {} refused", table.display()),
        )
        .detail(format!("{why} The statement: {}", current_statement()))
        .hint(format!(
            "If this is intended, the table's owner can SET LOCAL invariants.allow_drop = on and run it again (it is recorded in invariants.audit_log); or remove the protection first (invariants.unprotect, disable_audit, disable_soft_delete on {}).",
            table.display()
        ))
        .table(&table.schema, &table.name));
    }
    switch_allows("invariants.allow_drop", table)?;
    record_event(
        "DROP",
        table,
        serde_json::json!({"object_type": what, "object": table.display(), "statement": current_statement()}),
    );
    Ok(())
}

fn current_statement() -> String {
    crate::sql::one::<String>("SELECT pg_catalog.current_query()", &[]).unwrap_or_default()
}

// ---------------------------------------------------------------- start

fn guard_ddl_start_body(fcinfo: pg_sys::FunctionCallInfo) -> Result<Datum, InvariantError> {
    let event = event_data(fcinfo)?;
    let tree = event.parsetree;
    JOINING.with(|j| j.borrow_mut().push(!tree.is_null() && joins_hierarchy(tree)));
    PROTECTED_BEFORE_DROP.with(|p| p.borrow_mut().clear());
    // Nothing declared anywhere: nothing to guard, and none of the
    // extension's tables is read.
    if tree.is_null() || !pinned(registry::any_in_database) {
        return Ok(Datum::from(0));
    }
    // SAFETY: a parse tree node, read by its tag.
    let tag = unsafe { (*tree).type_ };
    match tag {
        pg_sys::NodeTag::T_DropStmt | pg_sys::NodeTag::T_DropOwnedStmt => pinned(note_protected_tables)?,
        pg_sys::NodeTag::T_AlterTableStmt => {
            // SAFETY: the tag says what the node is.
            let statement = unsafe { &*(tree as *const pg_sys::AlterTableStmt) };
            let changes = alter_table_changes(statement);
            if !changes.is_empty() {
                pinned(|| check_alter_table(&changes))?;
            }
        }
        _ => {}
    }
    Ok(Datum::from(0))
}

/// True when the statement puts a table under another: a new partition or
/// child gets the triggers its parent's declarations need.
fn joins_hierarchy(tree: *mut pg_sys::Node) -> bool {
    // SAFETY: a parse tree node, read as what its tag says it is.
    unsafe {
        match (*tree).type_ {
            pg_sys::NodeTag::T_CreateStmt => {
                let statement = &*(tree as *const pg_sys::CreateStmt);
                !statement.inhRelations.is_null() || !statement.partbound.is_null()
            }
            // CREATE SCHEMA ... CREATE TABLE ... PARTITION OF
            pg_sys::NodeTag::T_CreateSchemaStmt => {
                let statement = &*(tree as *const pg_sys::CreateSchemaStmt);
                PgList::<pg_sys::Node>::from_pg(statement.schemaElts)
                    .iter_ptr()
                    .any(joins_hierarchy)
            }
            pg_sys::NodeTag::T_AlterTableStmt => {
                let statement = &*(tree as *const pg_sys::AlterTableStmt);
                PgList::<pg_sys::AlterTableCmd>::from_pg(statement.cmds)
                    .iter_ptr()
                    .any(|command| {
                        matches!(
                            (*command).subtype,
                            pg_sys::AlterTableType::AT_AttachPartition | pg_sys::AlterTableType::AT_AddInherit
                        )
                    })
            }
            _ => false,
        }
    }
}

/// Notes the protected tables, with their partitions and children, before
/// a DROP runs.
fn note_protected_tables() -> Result<(), InvariantError> {
    let protected: Vec<Oid> = if extension_gone() {
        Vec::new()
    } else {
        let roots = crate::sql::one::<Vec<Oid>>(
            "SELECT array_agg(tbl::pg_catalog.oid) FROM invariants.protected_tables",
            &[],
        )
        .unwrap_or_default();
        roots.into_iter().flat_map(catalog::self_and_descendants).collect()
    };
    PROTECTED_BEFORE_DROP.with(|p| *p.borrow_mut() = protected);
    Ok(())
}

/// The relation a RangeVar names, if it exists.
fn relation_of(range: *const pg_sys::RangeVar) -> Option<Oid> {
    if range.is_null() {
        return None;
    }
    // SAFETY: a RangeVar of the statement; looked up without a lock and
    // without raising when it does not exist.
    let oid = unsafe {
        pg_sys::RangeVarGetRelidExtended(
            range,
            pg_sys::NoLock as pg_sys::LOCKMODE,
            pg_sys::RVROption::RVR_MISSING_OK,
            None,
            std::ptr::null_mut(),
        )
    };
    (oid != pg_sys::InvalidOid).then_some(oid)
}

/// An ALTER TABLE subcommand that can take rows out of a table, with the
/// tables it concerns (resolved with the caller's `search_path`).
enum Change {
    /// A column rewrite, on the named table (and those below it unless ONLY).
    ColumnType(Vec<Oid>),
    /// DETACH PARTITION: the parent, the partition.
    Detach(Oid, Option<Oid>),
    /// NO INHERIT: the parent.
    NoInherit(Option<Oid>),
}

fn alter_table_changes(statement: &pg_sys::AlterTableStmt) -> Vec<Change> {
    let Some(relid) = relation_of(statement.relation) else {
        return Vec::new();
    };
    // SAFETY: the statement's relation, non-null since it was found.
    let recurse = unsafe { (*statement.relation).inh };
    // SAFETY: cmds is a List of AlterTableCmd.
    let commands = unsafe { PgList::<pg_sys::AlterTableCmd>::from_pg(statement.cmds) };
    let mut changes = Vec::new();
    for command in commands.iter_ptr() {
        // SAFETY: each element is an AlterTableCmd of the statement.
        let command = unsafe { &*command };
        match command.subtype {
            pg_sys::AlterTableType::AT_AlterColumnType => changes.push(Change::ColumnType(if recurse {
                pinned(|| catalog::self_and_descendants(relid))
            } else {
                vec![relid]
            })),
            pg_sys::AlterTableType::AT_DetachPartition => {
                // SAFETY: the subcommand's def is a PartitionCmd.
                let partition = unsafe { relation_of((*(command.def as *const pg_sys::PartitionCmd)).name) };
                changes.push(Change::Detach(relid, partition));
            }
            pg_sys::AlterTableType::AT_DropInherit => {
                // SAFETY: the subcommand's def is the parent's RangeVar.
                changes.push(Change::NoInherit(relation_of(command.def as *const pg_sys::RangeVar)));
            }
            _ => {}
        }
    }
    changes
}

/// Refuses the ALTER TABLE subcommands that take rows out of a guarded
/// table: a column rewrite, DETACH PARTITION, NO INHERIT.
fn check_alter_table(changes: &[Change]) -> Result<(), InvariantError> {
    if extension_gone() {
        return Ok(());
    }
    for change in changes {
        let (table, what, why) = match change {
            Change::ColumnType(members) => (
                members.iter().copied().find(|m| guarded(*m)),
                "ALTER COLUMN ... TYPE",
                "Changing a column's type rewrites every row, and a USING expression can lose what the column held.",
            ),
            Change::Detach(parent, partition) => (
                (guarded(*parent) || partition.is_some_and(guarded)).then_some(*parent),
                "DETACH PARTITION",
                "Detaching takes the partition's rows out of the table, and a DROP of it afterwards would go unrecorded.",
            ),
            Change::NoInherit(parent) => (
                parent.filter(|p| guarded(*p)),
                "NO INHERIT",
                "Taking a child out of the inheritance takes its rows out of the table.",
            ),
        };
        if let Some(table) = table.and_then(Table::lookup) {
            refuse_unless_allowed(what, &table, why)?;
        }
    }
    Ok(())
}

// ------------------------------------------------------------- sql_drop

struct Dropped {
    object_type: String,
    identity: String,
    objid: Oid,
    /// schema, table (and column or trigger) of what was dropped.
    address: Vec<String>,
}

fn dropped_objects() -> Vec<Dropped> {
    Spi::connect(|client| {
        let rows = spi(client.select(
            "SELECT object_type, object_identity, objid, address_names FROM pg_catalog.pg_event_trigger_dropped_objects()",
            None,
            &[],
        ));
        rows.map(|row| Dropped {
            object_type: spi(row.get::<String>(1)).unwrap_or_default(),
            identity: spi(row.get::<String>(2)).unwrap_or_default(),
            objid: spi(row.get::<Oid>(3)).unwrap_or(pg_sys::InvalidOid),
            address: spi(row.get::<Vec<Option<String>>>(4))
                .unwrap_or_default()
                .into_iter()
                .flatten()
                .collect(),
        })
        .collect()
    })
}

fn table_named(address: &[String]) -> Option<Table> {
    let (schema, name) = (address.first()?, address.get(1)?);
    let oid = crate::sql::one::<Oid>(
        "SELECT c.oid FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = $1 AND c.relname = $2",
        &[schema.as_str().into(), name.as_str().into()],
    )?;
    Table::lookup(oid)
}

fn guard_drop_body(fcinfo: pg_sys::FunctionCallInfo) -> Result<Datum, InvariantError> {
    let event = event_data(fcinfo)?;
    let drop_trigger = event.tag == pg_sys::CommandTag::CMDTAG_DROP_TRIGGER;
    pinned(|| guard_drop_event(drop_trigger))?;
    Ok(Datum::from(0))
}

/// `drop_trigger`: the command is a DROP TRIGGER (a trigger of the
/// extension's dropped with something else, a column say, is put back by
/// `guard_alter` at the command's end, when the table still needs it).
fn guard_drop_event(drop_trigger: bool) -> Result<(), InvariantError> {
    let protected_before = PROTECTED_BEFORE_DROP.with(|p| std::mem::take(&mut *p.borrow_mut()));
    let dropped = dropped_objects();
    // Dropping the extension itself removes its tables too: nothing to guard.
    if extension_gone()
        || dropped
            .iter()
            .any(|d| d.object_type == "extension" && d.identity == "pg_invariants")
    {
        return Ok(());
    }
    // The tables that had triggers of the extension's: only their settings
    // are read (and forgotten), so that other DDL touches none of the
    // extension's tables.
    let had_ours: Vec<(&String, &String)> = dropped
        .iter()
        .filter(|d| d.object_type == "trigger" && d.address.get(2).is_some_and(|t| t.starts_with("invariants_")))
        .filter_map(|d| Some((d.address.first()?, d.address.get(1)?)))
        .collect();
    let mut forget: Vec<Oid> = Vec::new();
    for d in &dropped {
        match d.object_type.as_str() {
            "table" => {
                let had = matches!((d.address.first(), d.address.get(1)), (Some(schema), Some(name)) if had_ours.contains(&(schema, name)));
                if had {
                    forget.push(d.objid);
                }
                if !protected_before.contains(&d.objid) && (!had || !is_protected(d.objid)) {
                    continue;
                }
                let gone = Table {
                    oid: d.objid,
                    schema: d.address.first().cloned().unwrap_or_default(),
                    name: d.address.get(1).cloned().unwrap_or_default(),
                    partitioned: false,
                };
                if INTERNAL.with(Cell::get) {
                    continue;
                }
                if !ALLOW_DROP.get() {
                    return Err(InvariantError::new(
                        Code::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                        format!("DROP of protected table {} refused", gone.display()),
                    )
                    .detail(format!("The statement would remove it: {}", current_statement()))
                    .hint(format!(
                        "If this is intended, the table's owner can SET LOCAL invariants.allow_drop = on and run it again, or call invariants.unprotect('{}') first.",
                        gone.display()
                    ))
                    .table(&gone.schema, &gone.name));
                }
                // Postgres let the user drop it: its owner, or with CASCADE
                // the owner of something it depends on.
                record_event(
                    "DROP",
                    &gone,
                    serde_json::json!({"object_type": "table", "object": d.identity, "statement": current_statement()}),
                );
            }
            "table column" | "default value" => {
                let Some(table) = table_named(&d.address) else { continue };
                if !registry::any_on(&catalog::self_and_ancestors(table.oid)) || !is_protected(table.oid) {
                    continue;
                }
                let what = if d.object_type == "table column" {
                    "DROP COLUMN"
                } else {
                    "DROP of a column default"
                };
                refuse_unless_allowed(
                    what,
                    &table,
                    "It would remove what the column holds, or how new rows fill it.",
                )?;
            }
            "trigger" => {
                let Some(trigger) = d.address.get(2).filter(|t| t.starts_with("invariants_")) else {
                    continue;
                };
                let Some(table) = table_named(&d.address) else { continue };
                let ours = registry::required(table.oid).iter().any(|r| &r.trigger.name == trigger);
                if ours && !drop_trigger {
                    LOST_TRIGGERS.with(|l| l.borrow_mut().push(table.oid));
                } else if ours {
                    refuse_unless_allowed(
                        &format!("DROP TRIGGER {trigger}"),
                        &table,
                        "pg_invariants' triggers are what enforce and protect the table.",
                    )?;
                }
            }
            _ => {}
        }
    }
    if !forget.is_empty() {
        forget_tables(&forget);
    }
    Ok(())
}

/// Drops the extension's settings of tables that no longer exist.
fn forget_tables(oids: &[Oid]) {
    let oids = oids.to_vec();
    as_extension_owner(|| {
        for table in [
            "rule_definitions",
            "audited_tables",
            "protected_tables",
            "soft_delete_tables",
        ] {
            spi(Spi::run_with_args(
                &format!("DELETE FROM invariants.{table} WHERE tbl::pg_catalog.oid = ANY ($1)"),
                &[oids.clone().into()],
            ));
        }
    });
}

// ------------------------------------------------------ ddl_command_end

fn guard_alter_body(fcinfo: pg_sys::FunctionCallInfo) -> Result<Datum, InvariantError> {
    let event = event_data(fcinfo)?;
    if INTERNAL.with(Cell::get) {
        return Ok(Datum::from(0));
    }
    let tree = event.parsetree;
    // SAFETY: a parse tree node, read by its tag.
    let renamed = if !tree.is_null() && unsafe { (*tree).type_ } == pg_sys::NodeTag::T_RenameStmt {
        // SAFETY: the tag says what the node is.
        renamed_column(unsafe { &*(tree as *const pg_sys::RenameStmt) })
    } else {
        None
    };
    pinned(|| {
        if let Some((relid, old, new)) = &renamed {
            follow_rename(*relid, old, new);
        }
        guard_alter_event()
    })?;
    Ok(Datum::from(0))
}

/// The table, old and new name of a column a RenameStmt renames. Resolved
/// with the caller's `search_path`, as the statement itself was.
fn renamed_column(statement: &pg_sys::RenameStmt) -> Option<(Oid, String, String)> {
    if statement.renameType != pg_sys::ObjectType::OBJECT_COLUMN
        || statement.subname.is_null()
        || statement.newname.is_null()
    {
        return None;
    }
    let relid = relation_of(statement.relation)?;
    // SAFETY: NUL-terminated names of the statement.
    unsafe {
        Some((
            relid,
            std::ffi::CStr::from_ptr(statement.subname)
                .to_string_lossy()
                .into_owned(),
            std::ffi::CStr::from_ptr(statement.newname)
                .to_string_lossy()
                .into_owned(),
        ))
    }
}

/// A column renamed: the rules and settings that name it follow, so that a
/// rename changes nothing (tables are kept by OID already).
fn follow_rename(relid: Oid, old: &str, new: &str) {
    if extension_gone() || !registry::any_on(&catalog::self_and_ancestors(relid)) {
        return;
    }
    registry::follow_column_rename(relid, old, new);
    for member in catalog::self_and_descendants(relid) {
        catalog::invalidate(member);
    }
}

/// The tables a command created or changed (a trigger's table for trigger
/// commands), with every table below them.
fn touched_tables() -> Vec<Oid> {
    let touched = crate::sql::one::<Vec<Oid>>(
        "SELECT array_agg(DISTINCT r) FROM (
             SELECT c.objid AS r FROM pg_catalog.pg_event_trigger_ddl_commands() c
              WHERE c.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND c.objsubid = 0
             UNION
             SELECT t.tgrelid FROM pg_catalog.pg_event_trigger_ddl_commands() c
               JOIN pg_catalog.pg_trigger t ON t.oid = c.objid
              WHERE c.classid = 'pg_catalog.pg_trigger'::pg_catalog.regclass) s
          WHERE EXISTS (SELECT FROM pg_catalog.pg_class k WHERE k.oid = s.r AND k.relkind IN ('r', 'p', 'f'))",
        &[],
    )
    .unwrap_or_default();
    let mut all: Vec<Oid> = touched.into_iter().flat_map(catalog::self_and_descendants).collect();
    all.sort_by_key(|o| o.to_u32());
    all.dedup();
    all
}

fn guard_alter_event() -> Result<(), InvariantError> {
    let joining = JOINING.with(|j| j.borrow_mut().pop()).unwrap_or(false);
    if extension_gone() {
        return Ok(());
    }
    // Triggers dropped with something else (a column): put back, so that
    // the table stays guarded and a rule whose column is gone fails closed.
    // Only those: a trigger missing for another reason (a restore that
    // creates it later, say) is left alone.
    let lost = LOST_TRIGGERS.with(|l| std::mem::take(&mut *l.borrow_mut()));
    for relid in lost {
        if Table::lookup(relid).is_some() {
            registry::sync(relid);
        }
    }
    for relid in touched_tables() {
        // A table with no declaration above or on it has nothing to check,
        // and none of the extension's tables is read for it.
        if !registry::any_on(&catalog::self_and_ancestors(relid)) {
            continue;
        }
        let Some(table) = Table::lookup(relid) else { continue };
        // A partition or child just created or attached: give it its triggers.
        if joining && registry::fresh(relid) {
            registry::sync(relid);
        }
        let problems = registry::problems(relid);
        for problem in problems.iter().filter(|p| p.state != "missing") {
            refuse_unless_allowed(
                &format!("{} trigger {}", problem.state, problem.trigger),
                &table,
                &format!(
                    "pg_invariants' triggers are what enforce and protect the table ({}).",
                    problem.capability
                ),
            )?;
        }
        if guarded(relid) && unlogged(relid) {
            refuse_unless_allowed(
                "UNLOGGED",
                &table,
                "An unlogged table is emptied by the next crash, with nothing recorded.",
            )?;
        }
    }
    Ok(())
}

fn unlogged(relid: Oid) -> bool {
    crate::sql::one::<bool>(
        "SELECT relpersistence = 'u' FROM pg_catalog.pg_class WHERE oid = $1",
        &[relid.into()],
    ) == Some(true)
}
