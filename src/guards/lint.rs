//! `invariants.lint()`: what would let the incidents happen again.
use pgrx::prelude::*;

use crate::catalog::{self, quote_ident, quote_literal, spi, Table};
use crate::privilege::pinned;
use crate::registry;
use crate::rules::spec::RuleSpec;
use crate::rules::values::ValueSet;
use crate::rules::violations::detectable;

type Finding = (String, String, String, String);

/// One row per finding: severity (`error`, `warning`), the object, the
/// problem, and the SQL that fixes it.
#[pg_extern(schema = "invariants")]
#[allow(clippy::type_complexity)]
fn lint() -> TableIterator<
    'static,
    (
        name!(severity, String),
        name!(object, String),
        name!(problem, String),
        name!(fix, String),
    ),
> {
    pinned(|| {
        let mut findings: Vec<Finding> = Vec::new();
        findings.extend(cascades_into_protected());
        findings.extend(unique_counting_deleted_rows());
        findings.extend(missing_soft_delete_columns());
        findings.extend(update_audits_without_key());
        findings.extend(broken_rules());
        findings.extend(disabled_protections());
        findings.extend(unlogged_guarded_tables());
        findings.extend(replica_role_defaults());
        findings.extend(published_extension_tables());
        findings.extend(settings_of_dropped_tables());
        TableIterator::new(findings)
    })
}

fn rows(sql: &str) -> Vec<Vec<String>> {
    Spi::connect(|client| {
        let result = spi(client.select(sql, None, &[]));
        result
            .map(|row| {
                let n = row.columns();
                (1..=n).map(|i| spi(row.get::<String>(i)).unwrap_or_default()).collect()
            })
            .collect()
    })
}

/// Soft-delete tables whose column was renamed or dropped: their DELETE is
/// refused until soft delete is enabled again.
fn missing_soft_delete_columns() -> Vec<Finding> {
    rows(
        "SELECT s.tbl::text, s.column_name FROM invariants.soft_delete_tables s
          WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_attribute a
                             WHERE a.attrelid = s.tbl AND a.attname = s.column_name AND NOT a.attisdropped)
          ORDER BY 1",
    )
    .into_iter()
    .map(|r| {
        (
            "error".to_string(),
            r[0].clone(),
            format!(
                "soft-delete column \"{}\" no longer exists, so DELETE on {} is refused",
                r[1], r[0]
            ),
            format!(
                "SELECT invariants.enable_soft_delete({}, '<column>');",
                quote_literal(&r[0])
            ),
        )
    })
    .collect()
}

/// Tables whose UPDATEs are audited but that lost the key that finds an
/// updated row again: their UPDATEs are refused until it is back.
fn update_audits_without_key() -> Vec<Finding> {
    rows(
        "SELECT a.tbl::text FROM invariants.audited_tables a
          WHERE a.updates
            AND NOT EXISTS (SELECT FROM pg_catalog.pg_index i
                             WHERE i.indrelid = a.tbl AND i.indisunique AND i.indpred IS NULL
                               AND i.indexprs IS NULL AND i.indimmediate)
          ORDER BY 1",
    )
    .into_iter()
    .map(|r| {
        (
            "error".to_string(),
            r[0].clone(),
            format!("{} has its UPDATEs audited but no primary key, so its UPDATEs are refused", r[0]),
            format!(
                "ALTER TABLE {} ADD PRIMARY KEY (<columns>); -- or: SELECT invariants.enable_audit({}, updates => false);",
                r[0],
                quote_literal(&r[0])
            ),
        )
    })
    .collect()
}

/// Unique constraints and indexes of soft-delete tables that still count
/// soft-deleted rows (a deleted row blocks a new one with the same key).
fn unique_counting_deleted_rows() -> Vec<Finding> {
    rows(
        "SELECT s.tbl::text, i.indexrelid::regclass::text, s.column_name,
                coalesce(con.conname::text, ''),
                (SELECT string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY k.ord)
                   FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord)
                   JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum)
           FROM invariants.soft_delete_tables s
           JOIN pg_catalog.pg_index i ON i.indrelid = s.tbl AND i.indisunique AND NOT i.indisprimary
           LEFT JOIN pg_catalog.pg_constraint con ON con.conindid = i.indexrelid AND con.contype = 'u'
          WHERE i.indexprs IS NULL
            AND (i.indpred IS NULL OR pg_catalog.pg_get_expr(i.indpred, i.indrelid) NOT LIKE '%' || s.column_name || '%')
          ORDER BY 1, 2",
    )
    .into_iter()
    .map(|r| {
        let (table, index, column, constraint, columns) = (&r[0], &r[1], &r[2], &r[3], &r[4]);
        let drop = if constraint.is_empty() {
            format!("DROP INDEX {index};")
        } else {
            format!("ALTER TABLE {table} DROP CONSTRAINT {};", quote_ident(constraint))
        };
        (
            "warning".to_string(),
            index.clone(),
            format!("unique ({columns}) on soft-delete table {table} still counts deleted rows"),
            format!("{drop} CREATE UNIQUE INDEX ON {table} ({columns}) WHERE {} IS NULL;", quote_ident(column)),
        )
    })
    .collect()
}

/// ON DELETE CASCADE foreign keys that let a parent's delete wipe a
/// protected (or audited) table.
fn cascades_into_protected() -> Vec<Finding> {
    rows(
        "SELECT c.conname::text, c.conrelid::regclass::text, c.confrelid::regclass::text,
                pg_catalog.pg_get_constraintdef(c.oid),
                CASE WHEN EXISTS (SELECT FROM invariants.protected_tables p WHERE p.tbl = c.conrelid) THEN 'protected'
                     WHEN EXISTS (SELECT FROM invariants.soft_delete_tables s WHERE s.tbl = c.conrelid) THEN 'soft-delete'
                     ELSE 'audited' END
           FROM pg_catalog.pg_constraint c
          WHERE c.contype = 'f' AND c.confdeltype = 'c'
            AND (c.conrelid IN (SELECT tbl FROM invariants.protected_tables)
                 OR c.conrelid IN (SELECT tbl FROM invariants.audited_tables)
                 OR c.conrelid IN (SELECT tbl FROM invariants.soft_delete_tables))
          ORDER BY 2, 1",
    )
    .into_iter()
    .map(|r| {
        let (name, child, parent, definition, kind) = (&r[0], &r[1], &r[2], &r[3], &r[4]);
        let restrict = definition.replace("ON DELETE CASCADE", "ON DELETE RESTRICT");
        (
            if kind == "protected" { "error" } else { "warning" }.to_string(),
            format!("{child}.{name}"),
            format!("deleting a row of {parent} silently deletes rows of {kind} table {child} (ON DELETE CASCADE)"),
            format!(
                "ALTER TABLE {child} DROP CONSTRAINT {}, ADD CONSTRAINT {} {restrict};",
                quote_ident(name),
                quote_ident(name)
            ),
        )
    })
    .collect()
}

/// Rules whose columns were dropped or renamed, or whose values no longer
/// fit their column's type.
fn broken_rules() -> Vec<Finding> {
    let (found, broken) = detectable(None);
    let mut findings: Vec<Finding> = broken
        .into_iter()
        .map(|b| {
            let table = b.table.display();
            (
                "error".to_string(),
                format!("{table}: rule {}", b.rule),
                b.problem,
                format!(
                    "SELECT invariants.drop_rule({}, {}); -- then declare it again",
                    quote_literal(&table),
                    quote_literal(&b.rule)
                ),
            )
        })
        .collect();
    for d in found {
        let values: Vec<(&str, Vec<String>)> = match &d.rule.spec {
            RuleSpec::RequireNotNull(s) => vec![(s.when_column.as_str(), s.when_values.clone())],
            RuleSpec::RequireOnSet(s) => vec![(s.column.as_str(), s.allowed.clone())],
            RuleSpec::AllowTransitions(s) => vec![(s.column.as_str(), s.states())],
            _ => Vec::new(),
        };
        for (name, list) in values {
            let Some(column) = crate::catalog::columns(d.table.oid)
                .into_iter()
                .find(|c| c.name == name)
            else {
                continue;
            };
            if let Err(problem) = ValueSet::compile(&d.table, &column, &list) {
                let table = d.table.display();
                findings.push((
                    "error".to_string(),
                    format!("{table}: rule {}", d.rule.name),
                    format!("the values of column {name} no longer fit it, whose type changed: {problem}"),
                    format!(
                        "SELECT invariants.drop_rule({}, {}); -- then declare it again",
                        quote_literal(&table),
                        quote_literal(&d.rule.name)
                    ),
                ));
            }
        }
    }
    findings
}

/// The extension's triggers that differ from what their tables need:
/// (table, trigger, capability, state), see `registry::problems`.
pub fn trigger_problems() -> Vec<(String, String, String, String)> {
    registry::covered_tables()
        .into_iter()
        .filter_map(|relid| Table::lookup(relid).map(|t| (relid, t)))
        .flat_map(|(relid, table)| {
            registry::problems(relid).into_iter().map(move |p| {
                (
                    table.display(),
                    p.trigger,
                    p.capability.to_string(),
                    p.state.to_string(),
                )
            })
        })
        .collect()
}

/// The SQL that puts a trigger of `trigger_problems` back.
pub fn trigger_fix(table: &str, trigger: &str, _capability: &str, state: &str) -> String {
    if state == "disabled" {
        return format!(
            "ALTER TABLE {table} ENABLE TRIGGER {};",
            catalog::display_ident(trigger)
        );
    }
    format!("SELECT invariants.reinstall_triggers({});", quote_literal(table))
}

/// pg_invariants triggers that are disabled or missing on the tables that
/// need them.
fn disabled_protections() -> Vec<Finding> {
    trigger_problems()
        .into_iter()
        .map(|(table, trigger, capability, state)| {
            (
                "error".to_string(),
                format!("{table}: trigger {trigger}"),
                format!("the trigger is {state}, so the {capability} of {table} is off"),
                trigger_fix(&table, &trigger, &capability, &state),
            )
        })
        .collect()
}

/// Guarded tables that are UNLOGGED: the next crash empties them.
fn unlogged_guarded_tables() -> Vec<Finding> {
    registry::covered_tables()
        .into_iter()
        .filter(|relid| !crate::guards::before_truncate::triggers(*relid, &[]).is_empty())
        .filter_map(|relid| {
            let unlogged = crate::sql::one::<bool>(
                "SELECT relpersistence = 'u' FROM pg_catalog.pg_class WHERE oid = $1",
                &[relid.into()],
            ) == Some(true);
            let table = Table::lookup(relid)?;
            unlogged.then(|| {
                (
                    "error".to_string(),
                    table.display(),
                    format!(
                        "{} is UNLOGGED: a crash empties it, and nothing records what it held",
                        table.display()
                    ),
                    format!("ALTER TABLE {} SET LOGGED;", table.qualified()),
                )
            })
        })
        .collect()
}

/// Databases and roles whose sessions start with
/// `session_replication_role = replica`: every trigger of the extension is
/// off in them.
fn replica_role_defaults() -> Vec<Finding> {
    rows(
        "SELECT coalesce(d.datname::text, ''), coalesce(r.rolname::text, '')
           FROM pg_catalog.pg_db_role_setting s
           LEFT JOIN pg_catalog.pg_database d ON d.oid = s.setdatabase
           LEFT JOIN pg_catalog.pg_roles r ON r.oid = s.setrole
          WHERE EXISTS (SELECT FROM unnest(s.setconfig) c WHERE c ILIKE 'session_replication_role=replica')
          ORDER BY 1, 2",
    )
    .into_iter()
    .map(|r| {
        let (database, role) = (&r[0], &r[1]);
        let (object, fix) = match (database.is_empty(), role.is_empty()) {
            (false, true) => (
                format!("database {database}"),
                format!("ALTER DATABASE {} RESET session_replication_role;", quote_ident(database)),
            ),
            (true, false) => (
                format!("role {role}"),
                format!("ALTER ROLE {} RESET session_replication_role;", quote_ident(role)),
            ),
            _ => (
                format!("role {role} in database {database}"),
                format!(
                    "ALTER ROLE {} IN DATABASE {} RESET session_replication_role;",
                    quote_ident(role),
                    quote_ident(database)
                ),
            ),
        };
        (
            "error".to_string(),
            object.clone(),
            format!("sessions of {object} start with session_replication_role = replica: pg_invariants' triggers do not fire in them"),
            fix,
        )
    })
    .collect()
}

/// Publications that publish the extension's own tables (FOR ALL TABLES
/// does): a subscriber would get another database's log and settings.
fn published_extension_tables() -> Vec<Finding> {
    rows(
        "SELECT p.pubname::text, p.puballtables::text,
                pg_catalog.string_agg('invariants.' || pg_catalog.quote_ident(t.tablename), ', ' ORDER BY t.tablename)
           FROM pg_catalog.pg_publication p
           JOIN pg_catalog.pg_publication_tables t ON t.pubname = p.pubname
          WHERE t.schemaname = 'invariants'
          GROUP BY 1, 2
          ORDER BY 1",
    )
    .into_iter()
    .map(|r| {
        let all = r[1] == "t";
        (
            "warning".to_string(),
            format!("publication {}", r[0]),
            format!(
                "publication {} publishes pg_invariants' own tables{}: subscribers get this database's audit log and settings",
                r[0],
                if all { " (FOR ALL TABLES)" } else { "" }
            ),
            if all {
                "-- list the tables to publish instead of FOR ALL TABLES (CREATE PUBLICATION ... FOR TABLE ...)".to_string()
            } else {
                format!("ALTER PUBLICATION {} DROP TABLE {};", quote_ident(&r[0]), r[2])
            },
        )
    })
    .collect()
}

/// Settings of tables that no longer exist (dropped while the extension's
/// event triggers could not see it).
fn settings_of_dropped_tables() -> Vec<Finding> {
    rows(
        "SELECT s.kind, s.tbl::pg_catalog.oid::text FROM (
             SELECT 'rule' AS kind, tbl FROM invariants.rule_definitions
             UNION ALL SELECT 'audit', tbl FROM invariants.audited_tables
             UNION ALL SELECT 'protection', tbl FROM invariants.protected_tables
             UNION ALL SELECT 'soft delete', tbl FROM invariants.soft_delete_tables) s
          WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = s.tbl)
          ORDER BY 2, 1",
    )
    .into_iter()
    .map(|r| {
        (
            "warning".to_string(),
            format!("dropped table {}", r[1]),
            format!(
                "a {} setting remains for a table that no longer exists (OID {})",
                r[0], r[1]
            ),
            "SELECT invariants.forget_dropped_tables(); -- removes it".to_string(),
        )
    })
    .collect()
}
