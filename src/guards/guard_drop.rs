//! Event triggers guarding protected tables against DROP.
//!
//! `invariants.guard_drop()` runs at `sql_drop` and sees every object a
//! command removed, `DROP ... CASCADE` included (a type, a schema, a
//! function a column default uses): dropping a protected table, one of its
//! columns or column defaults, or one of the extension's triggers on it fails
//! unless `invariants.allow_drop` is on. Allowed drops of protected tables are
//! recorded in the audit log (op `DROP`), and the extension forgets the
//! settings of every dropped table.
//!
//! `invariants.guard_alter()` runs at `ddl_command_end` of ALTER TABLE and
//! refuses leaving one of the extension's triggers on a protected table
//! disabled, under the same switch.
use std::cell::Cell;

use pgrx::pg_sys::{self, Datum, Oid};
use pgrx::prelude::*;

use super::{is_owner, protected_limit, switch_allows};
use crate::audit_log::record_event;
use crate::catalog::{spi, spi_row, Table};
use crate::errors::{Code, InvariantError};
use crate::guc::ALLOW_DROP;
use crate::privilege::{as_extension_owner, pinned};

thread_local! {
    // Set while the extension itself changes its triggers (drop_rule,
    // disable_audit, ...); nothing a user runs can set it.
    static INTERNAL: Cell<bool> = const { Cell::new(false) };
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
    if crate::catalog::has_trigger(table.oid, name) {
        let sql = format!(
            "DROP TRIGGER {} ON {}",
            crate::catalog::quote_ident(name),
            table.qualified()
        );
        internally(|| spi(Spi::run(&sql)));
    }
}

pgrx::extension_sql!(
    r#"
CREATE FUNCTION invariants.guard_drop() RETURNS event_trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'guard_drop';
CREATE FUNCTION invariants.guard_alter() RETURNS event_trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'guard_alter';
CREATE EVENT TRIGGER invariants_guard_drop ON sql_drop EXECUTE FUNCTION invariants.guard_drop();
CREATE EVENT TRIGGER invariants_guard_alter ON ddl_command_end WHEN TAG IN ('ALTER TABLE', 'CREATE TABLE')
    EXECUTE FUNCTION invariants.guard_alter();
"#,
    name = "guard_event_triggers",
    requires = ["schema"]
);

crate::c_function!(guard_drop, pg_finfo_guard_drop, guard_drop_body);
crate::c_function!(guard_alter, pg_finfo_guard_alter, guard_alter_body);

fn require_event_trigger(fcinfo: pg_sys::FunctionCallInfo) -> Result<(), InvariantError> {
    // SAFETY: fcinfo is the one Postgres passed; context is NULL or a node.
    let is_event = unsafe {
        let context = (*fcinfo).context;
        !context.is_null() && (*context).type_ == pg_sys::NodeTag::T_EventTriggerData
    };
    if is_event {
        Ok(())
    } else {
        Err(InvariantError::new(
            Code::ERRCODE_E_R_I_E_EVENT_TRIGGER_PROTOCOL_VIOLATED,
            "this function can only be called as an event trigger",
        ))
    }
}

struct Dropped {
    object_type: String,
    identity: String,
    objid: Oid,
    /// schema, table (and column) of what was dropped, where Postgres says.
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

fn protected_oid(oid: Oid) -> bool {
    spi(Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT FROM invariants.protected_tables WHERE tbl::oid = $1)",
        &[oid.into()],
    )) == Some(true)
}

fn table_named(address: &[String]) -> Option<Table> {
    let (schema, name) = (address.first()?, address.get(1)?);
    let oid = spi_row(Spi::get_one_with_args::<Oid>(
        "SELECT c.oid FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = $1 AND c.relname = $2",
        &[schema.as_str().into(), name.as_str().into()],
    ))
    .flatten()?;
    Table::lookup(oid)
}

fn refusal(what: &str, table_display: &str, schema: &str, name: &str) -> InvariantError {
    InvariantError::new(
        Code::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        format!("{what} of protected table {table_display} refused"),
    )
    .detail(format!("The statement would remove it: {}", current_statement()))
    .hint(format!(
        "If this is intended, the table's owner can SET LOCAL invariants.allow_drop = on and run it again, or call invariants.unprotect('{table_display}') first."
    ))
    .table(schema, name)
}

fn current_statement() -> String {
    spi(Spi::get_one::<String>("SELECT pg_catalog.current_query()")).unwrap_or_default()
}

fn guard_drop_body(fcinfo: pg_sys::FunctionCallInfo) -> Result<Datum, InvariantError> {
    require_event_trigger(fcinfo)?;
    pinned(guard_drop_event)
}

fn guard_drop_event() -> Result<Datum, InvariantError> {
    let dropped = dropped_objects();
    // Dropping the extension itself removes its tables too: nothing to guard.
    if dropped
        .iter()
        .any(|d| d.object_type == "extension" && d.identity == "pg_invariants")
    {
        return Ok(Datum::from(0));
    }
    let internal = INTERNAL.with(Cell::get);
    let allow = ALLOW_DROP.get();
    let mut forget: Vec<Oid> = Vec::new();
    for d in &dropped {
        match d.object_type.as_str() {
            "table" => {
                forget.push(d.objid);
                if !protected_oid(d.objid) {
                    continue;
                }
                let (schema, name) = (
                    d.address.first().cloned().unwrap_or_default(),
                    d.address.get(1).cloned().unwrap_or_default(),
                );
                let display = format!("{schema}.{name}");
                if !allow {
                    return Err(refusal("DROP", &display, &schema, &name));
                }
                // Postgres let the user drop it: its owner, or with CASCADE
                // the owner of something it depends on.
                let gone = Table {
                    oid: d.objid,
                    schema,
                    name,
                    partitioned: false,
                };
                record_event(
                    "DROP",
                    &gone,
                    serde_json::json!({"object_type": "table", "object": d.identity}),
                );
            }
            "table column" | "default value" | "trigger" => {
                let Some(table) = table_named(&d.address) else { continue };
                if protected_limit(table.oid).is_none() {
                    continue;
                }
                let ours = d.object_type != "trigger" || d.address.get(2).is_some_and(|t| t.starts_with("invariants_"));
                if !ours || (d.object_type == "trigger" && internal) {
                    continue;
                }
                let what = match d.object_type.as_str() {
                    "table column" => "DROP COLUMN",
                    "default value" => "DROP of a column default",
                    _ => "DROP of a pg_invariants trigger",
                };
                if !allow {
                    return Err(refusal(what, &table.display(), &table.schema, &table.name));
                }
                switch_allows("invariants.allow_drop", &table)?;
                record_event(
                    "DROP",
                    &table,
                    serde_json::json!({"object_type": d.object_type, "object": d.identity}),
                );
            }
            _ => {}
        }
    }
    if !forget.is_empty() {
        forget_tables(&forget);
    }
    Ok(Datum::from(0))
}

/// A partition created or attached under an audited or soft-delete table
/// gets the statement-level triggers its parent has (Postgres clones only
/// row-level ones), so that a DELETE or TRUNCATE naming it is covered too.
fn cover_new_partitions() {
    let partitions: Vec<Oid> = Spi::connect(|client| {
        let rows = spi(client.select(
            "SELECT DISTINCT c.objid FROM pg_catalog.pg_event_trigger_ddl_commands() c
               JOIN pg_catalog.pg_class r ON r.oid = c.objid
              WHERE c.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND c.objsubid = 0
                AND (r.relispartition OR EXISTS (SELECT FROM pg_catalog.pg_inherits i WHERE i.inhparent = r.oid))",
            None,
            &[],
        ));
        rows.filter_map(|row| spi(row.get::<Oid>(1))).collect()
    });
    for relid in partitions {
        // The table itself and, after ATTACH PARTITION, everything below it.
        for part in crate::catalog::partition_tree(relid) {
            let Some(table) = Table::lookup(part) else { continue };
            internally(|| {
                if crate::audit::truncate_capture_limit(part).is_some() {
                    crate::audit::enable_audit::install_triggers(&table);
                }
                if let Some(column) = crate::soft_delete::soft_delete_column(part) {
                    crate::soft_delete::enable_soft_delete::install_triggers(&table, &column);
                }
            });
        }
    }
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
                &format!("DELETE FROM invariants.{table} WHERE tbl::oid = ANY ($1)"),
                &[oids.clone().into()],
            ));
        }
    });
}

fn guard_alter_body(fcinfo: pg_sys::FunctionCallInfo) -> Result<Datum, InvariantError> {
    require_event_trigger(fcinfo)?;
    pinned(guard_alter_event)
}

fn guard_alter_event() -> Result<Datum, InvariantError> {
    if INTERNAL.with(Cell::get) {
        return Ok(Datum::from(0));
    }
    cover_new_partitions();
    let disabled: Vec<(Oid, String)> = Spi::connect(|client| {
        let rows = spi(client.select(
            "SELECT DISTINCT t.tgrelid, t.tgname::text
               FROM pg_catalog.pg_event_trigger_ddl_commands() c
               JOIN pg_catalog.pg_trigger t ON t.tgrelid = c.objid
              WHERE c.classid = 'pg_catalog.pg_class'::regclass AND t.tgname LIKE 'invariants\\_%' AND t.tgenabled IN ('D', 'R')",
            None,
            &[],
        ));
        rows.map(|row| {
            (
                spi(row.get::<Oid>(1)).unwrap_or(pg_sys::InvalidOid),
                spi(row.get::<String>(2)).unwrap_or_default(),
            )
        })
        .collect()
    });
    for (relid, trigger) in disabled {
        let Some(table) = Table::lookup(relid) else { continue };
        if protected_limit(relid).is_none() {
            continue;
        }
        if !ALLOW_DROP.get() {
            return Err(InvariantError::new(
                Code::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!(
                    "disabling trigger {trigger} of protected table {} refused",
                    table.display()
                ),
            )
            .detail("pg_invariants' triggers are what protect the table.")
            .hint("If this is intended, the table's owner can SET LOCAL invariants.allow_drop = on and run it again.")
            .table(&table.schema, &table.name));
        }
        switch_allows("invariants.allow_drop", &table)?;
        if is_owner(&table) {
            record_event(
                "DROP",
                &table,
                serde_json::json!({"object_type": "trigger disabled", "object": trigger}),
            );
        }
    }
    Ok(Datum::from(0))
}
