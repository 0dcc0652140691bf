//! Every trigger the extension puts on a user table, described once.
//!
//! What a table needs follows from what is declared on it or on a table
//! above it (a partitioned table, an inheritance parent): `required` says
//! which triggers, `sync` makes the table have exactly those, and `problems`
//! says how the table's triggers differ from them (missing, disabled,
//! renamed, replaced) for the DDL guard, `lint()` and `health()`.
//!
//! Postgres clones a partitioned table's row-level triggers to every
//! partition, present and future; its statement-level triggers, and every
//! trigger of an inheritance parent, it does not. So row-level triggers of a
//! declaration above a partition come as clones, and everything else is
//! created on the table itself.
use pgrx::pg_sys::Oid;
use pgrx::prelude::*;

pub use pg_invariants_core::triggers::{Level, Timing, Trigger};

use crate::catalog::{self, spi, Table};
use crate::fast_hash::FastMap;

/// A trigger a table needs; `cloned` when Postgres gives it the trigger
/// (a row-level trigger of a partitioned table above it).
#[derive(Debug, Clone)]
pub struct Required {
    pub trigger: Trigger,
    pub cloned: bool,
}

/// What a capability tells the registry; each capability's module
/// declares one, and `crate::CAPABILITIES` lists them.
pub struct Capability {
    /// The triggers a table needs for what the capability declares on it or
    /// on a table above it; called with the table and its ancestors
    /// (nearest first). Each is one of `pg_invariants_core::triggers`.
    pub triggers: fn(Oid, &[Oid]) -> Vec<Trigger>,
    /// Makes the capability's declarations follow the rename of a column of
    /// a table (old name, new name).
    pub follow_column_rename: fn(Oid, &str, &str),
}

/// For a capability whose declarations name no column.
pub fn names_no_column(_relid: Oid, _old: &str, _new: &str) {}

/// The declarations of every capability follow the rename of column `old`
/// of `relid` to `new`.
pub fn follow_column_rename(relid: Oid, old: &str, new: &str) {
    for capability in &crate::CAPABILITIES {
        (capability.follow_column_rename)(relid, old, new);
    }
}

/// The triggers `relid` needs.
pub fn required(relid: Oid) -> Vec<Required> {
    let lineage = catalog::self_and_ancestors(relid);
    let partition = is_partition(relid);
    let existing_columns: Vec<String> = catalog::columns(relid).into_iter().map(|c| c.name).collect();
    let mut needed: Vec<Required> = Vec::new();
    for capability in &crate::CAPABILITIES {
        for mut trigger in (capability.triggers)(relid, &lineage) {
            // A trigger two capabilities need belongs to the first.
            if needed.iter().any(|r| r.trigger.name == trigger.name) {
                continue;
            }
            // A declaration that names a column since dropped fires on
            // every UPDATE instead, where it fails closed.
            if trigger.columns.iter().any(|c| !existing_columns.contains(c)) {
                trigger.columns.clear();
            }
            let cloned = partition && trigger.level == Level::Row;
            needed.push(Required { trigger, cloned });
        }
    }
    needed
}

fn is_partition(relid: Oid) -> bool {
    crate::sql::one::<bool>(
        "SELECT relispartition FROM pg_catalog.pg_class WHERE oid = $1",
        &[relid.into()],
    ) == Some(true)
}

/// A trigger of the extension's as it is on a table.
#[derive(Debug, Clone)]
struct Existing {
    name: String,
    function: String,
    args: Vec<String>,
    tgtype: i16,
    columns: Vec<String>,
    old_table: Option<String>,
    new_table: Option<String>,
    /// Its WHEN condition, as Postgres shows it; None without one.
    when: Option<String>,
    enabled: String,
    cloned: bool,
}

/// The triggers on `relid` that run one of the extension's functions, or
/// that have the name of one `needed` (whatever they run: a trigger
/// replaced by one of the same name is still found).
fn existing(relid: Oid, needed: &[Required]) -> Vec<Existing> {
    let names: Vec<String> = needed.iter().map(|r| r.trigger.name.clone()).collect();
    Spi::connect(|client| {
        let rows = spi(client.select(
            "SELECT t.tgname::text, p.proname::text, t.tgargs, t.tgtype,
                    ARRAY(SELECT a.attname::text FROM unnest(t.tgattr::int2[]) k
                            JOIN pg_catalog.pg_attribute a ON a.attrelid = t.tgrelid AND a.attnum = k ORDER BY 1),
                    t.tgoldtable::text, t.tgenabled::text, t.tgparentid <> 0,
                    CASE WHEN t.tgqual IS NOT NULL
                         THEN pg_catalog.substring(pg_catalog.pg_get_triggerdef(t.oid), ' WHEN (.*) EXECUTE ') END,
                    t.tgnewtable::text
               FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
              WHERE t.tgrelid = $1
                AND (p.pronamespace = pg_catalog.to_regnamespace('invariants') OR t.tgname = ANY ($2))
              ORDER BY 1",
            None,
            &[relid.into(), names.into()],
        ));
        rows.map(|row| Existing {
            name: spi(row.get::<String>(1)).unwrap_or_default(),
            function: spi(row.get::<String>(2)).unwrap_or_default(),
            // Each argument is followed by a NUL.
            args: spi(row.get::<Vec<u8>>(3))
                .unwrap_or_default()
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect(),
            tgtype: spi(row.get::<i16>(4)).unwrap_or_default(),
            columns: spi(row.get::<Vec<String>>(5)).unwrap_or_default(),
            old_table: spi(row.get::<String>(6)),
            new_table: spi(row.get::<String>(10)),
            when: spi(row.get::<String>(9)),
            enabled: spi(row.get::<String>(7)).unwrap_or_default(),
            cloned: spi(row.get::<bool>(8)).unwrap_or(false),
        })
        .collect()
    })
}

fn matches(existing: &Existing, trigger: &Trigger) -> bool {
    let mut columns = trigger.columns.clone();
    columns.sort();
    existing.function == trigger.function
        && existing.args == trigger.args
        && existing.tgtype == trigger.tgtype()
        && existing.columns == columns
        && existing.old_table.as_deref() == trigger.old_table
        && existing.new_table.as_deref() == trigger.new_table
        && trigger.same_when(existing.when.as_deref())
}

/// How one of a table's triggers differs from what it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub trigger: String,
    pub capability: &'static str,
    /// "missing", "disabled", "replaced" (same name, other definition),
    /// "renamed" (the extension's function under another name), or
    /// "firing mode changed" (ENABLE REPLICA or ALWAYS).
    pub state: &'static str,
}

/// How the triggers of `relid` differ from what it needs.
pub fn problems(relid: Oid) -> Vec<Problem> {
    let needed = required(relid);
    let present = existing(relid, &needed);
    let mut found = Vec::new();
    for r in &needed {
        let state = match present.iter().find(|e| e.name == r.trigger.name) {
            None => Some("missing"),
            Some(e) if !matches(e, &r.trigger) => Some("replaced"),
            Some(e) if e.enabled == "D" => Some("disabled"),
            Some(e) if e.enabled != "O" => Some("firing mode changed"),
            Some(_) => None,
        };
        if let Some(state) = state {
            found.push(Problem {
                trigger: r.trigger.name.clone(),
                capability: r.trigger.capability,
                state,
            });
        }
    }
    for e in &present {
        if !e.cloned && !needed.iter().any(|r| r.trigger.name == e.name) && !needed.is_empty() {
            found.push(Problem {
                trigger: e.name.clone(),
                capability: needed
                    .iter()
                    .find(|r| r.trigger.function == e.function)
                    .map_or("", |r| r.trigger.capability),
                state: "renamed",
            });
        }
    }
    found
}

/// True when `relid` needs triggers and has none of its own yet (a
/// partition or child just created or attached).
pub fn fresh(relid: Oid) -> bool {
    let needed = required(relid);
    needed.iter().any(|r| !r.cloned) && existing(relid, &needed).iter().all(|e| e.cloned)
}

/// Makes the triggers of `relid` exactly what it needs: missing ones are
/// created, differing ones created again, and the extension's triggers it
/// no longer needs dropped.
pub fn sync(relid: Oid) {
    // A declaration changed by this statement is not yet seen through the
    // relcache's invalidation (that comes at the next command).
    crate::relcache::forget(relid);
    let Some(table) = Table::lookup(relid) else { return };
    let needed = required(relid);
    let present = existing(relid, &needed);
    crate::guards::guard_ddl::internally(|| {
        for e in &present {
            if e.cloned {
                continue;
            }
            let keep = needed
                .iter()
                .any(|r| !r.cloned && r.trigger.name == e.name && matches(e, &r.trigger) && e.enabled == "O");
            if !keep {
                spi(Spi::run(&format!(
                    "DROP TRIGGER {} ON {}",
                    catalog::quote_ident(&e.name),
                    table.qualified()
                )));
            }
        }
        let present = existing(relid, &needed);
        for r in needed.iter().filter(|r| !r.cloned) {
            if !present.iter().any(|e| e.name == r.trigger.name) {
                spi(Spi::run(&r.trigger.create_sql(&table.qualified())));
            }
        }
    });
    catalog::invalidate(relid);
}

/// `sync` for `relid` and every table below it.
pub fn sync_tree(relid: Oid) {
    for member in catalog::self_and_descendants(relid) {
        sync(member);
    }
}

/// The extension's trigger functions by name, with their oids.
pub fn functions() -> FastMap<String, Oid> {
    Spi::connect(|client| {
        let rows = spi(client.select(
            "SELECT p.proname::text, p.oid FROM pg_catalog.pg_proc p
              WHERE p.pronamespace = 'invariants'::pg_catalog.regnamespace
                AND p.prorettype = 'pg_catalog.trigger'::pg_catalog.regtype",
            None,
            &[],
        ));
        rows.filter_map(|row| Some((spi(row.get::<String>(1))?, spi(row.get::<Oid>(2))?)))
            .collect()
    })
}

/// True when some table of the database has a trigger of the extension's.
/// Reads only the catalogs: the DDL guards ask it first, so that in a
/// database (or for a table) with no declarations they touch none of the
/// extension's tables (their locks would show in `pg_locks`).
pub fn any_in_database() -> bool {
    crate::sql::one::<bool>(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
                         WHERE p.pronamespace = pg_catalog.to_regnamespace('invariants'))",
        &[],
    ) == Some(true)
}

/// True when one of `tables` has a trigger of the extension's (the
/// catalogs only, as [`any_in_database`]).
pub fn any_on(tables: &[Oid]) -> bool {
    crate::sql::one::<bool>(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
                         WHERE t.tgrelid = ANY ($1) AND p.pronamespace = pg_catalog.to_regnamespace('invariants'))",
        &[tables.to_vec().into()],
    ) == Some(true)
}

/// Every table that needs triggers of the extension's: declared on, or
/// below a table declared on.
pub fn covered_tables() -> Vec<Oid> {
    let roots: Vec<Oid> = crate::sql::one::<Vec<Oid>>(
        "SELECT array_agg(DISTINCT t) FROM (
             SELECT tbl::pg_catalog.oid AS t FROM invariants.rule_definitions
             UNION SELECT child::pg_catalog.oid FROM invariants.rule_definitions WHERE child IS NOT NULL
             UNION SELECT tbl::pg_catalog.oid FROM invariants.audited_tables
             UNION SELECT tbl::pg_catalog.oid FROM invariants.protected_tables
             UNION SELECT tbl::pg_catalog.oid FROM invariants.soft_delete_tables) s
          WHERE EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = s.t)",
        &[],
    )
    .unwrap_or_default();
    let mut all: Vec<Oid> = roots.into_iter().flat_map(catalog::self_and_descendants).collect();
    all.sort_by_key(|o| o.to_u32());
    all.dedup();
    all
}
