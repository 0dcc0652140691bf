//! Repair: `invariants.repair()` fixes the rows that violate repairable
//! rules, logging each row's previous image as op `REPAIR`; and
//! `invariants.schedule_repair()` runs it from pg_cron.
use pg_invariants_core::schedule::plausible_schedule;
use pgrx::prelude::*;

use super::spec::{repair_value_text, Params};
use super::values;
use super::violations::{detectable, rule_not_detectable, Detectable};
use crate::audit_log::capture;
use crate::catalog::{self, quote_ident, quote_literal, spi, table_arg, Regclass};
use crate::errors::{fail, Code, InvariantError};
use crate::privilege::{as_table_owner, pinned};

/// Repairs every repairable rule (of `tbl`, named `rule`), or with `dry_run`
/// only counts what it would repair.
#[pg_extern(schema = "invariants")]
#[allow(clippy::type_complexity)]
fn repair(
    tbl: default!(Option<Regclass>, "NULL"),
    rule: default!(Option<&str>, "NULL"),
    dry_run: default!(Option<bool>, "false"),
) -> TableIterator<
    'static,
    (
        name!(tbl, Regclass),
        name!(rule, String),
        name!(fixed_count, i64),
        name!(group_ids, Vec<String>),
    ),
> {
    pinned(|| {
        let Some(dry_run) = dry_run else {
            fail(
                Code::ERRCODE_NULL_VALUE_NOT_ALLOWED,
                "argument dry_run must not be NULL",
            )
        };
        let table = tbl.map(|t| table_arg(Some(t), "tbl"));
        let oids = table.as_ref().map(|t| vec![t.oid]);
        let (candidates, _) = detectable(oids.as_deref());
        if let (Some(table), Some(rule)) = (&table, rule) {
            if !candidates.iter().any(|d| d.rule.name == rule) {
                rule_not_detectable(table, rule);
            }
        }
        let selected: Vec<&Detectable> = candidates
            .iter()
            .filter(|d| rule.is_none_or(|r| r == d.rule.name))
            .collect();
        if let Some(rule) = rule {
            if selected.is_empty() {
                fail(
                    Code::ERRCODE_UNDEFINED_OBJECT,
                    format!("argument rule: no detectable rule named \"{rule}\" exists"),
                );
            }
            if let Some(d) = selected.iter().find(|d| d.rule.spec.repair().is_none()) {
                InvariantError::new(
                    Code::ERRCODE_INVALID_PARAMETER_VALUE,
                    format!(
                        "argument rule: rule \"{rule}\" of table {} has no repair",
                        d.table.display()
                    ),
                )
                .hint("Declare the rule with a repair, e.g. repair => '{\"set\": {\"status\": \"pending\"}}'.")
                .raise();
            }
        }
        let mut results = Vec::new();
        for d in selected.into_iter().filter(|d| d.rule.spec.repair().is_some()) {
            // Only the table's owner may change it. Over all tables (a scheduled
            // repair), the tables of other owners are left out.
            if table.is_none() && !crate::guards::is_owner(&d.table) {
                continue;
            }
            table_arg(Some(Regclass(d.table.oid)), "tbl");
            let (fixed, groups) = if dry_run { count_repairable(d) } else { repair_rule(d) };
            results.push((Regclass(d.table.oid), d.rule.name.clone(), fixed, groups));
        }
        TableIterator::new(results)
    })
}

fn group_expression(d: &Detectable, alias: &str) -> String {
    match d.rule.spec.repair().and_then(|r| r.group_by.as_ref()) {
        Some(column) => format!("{alias}.{}::text", quote_ident(column)),
        None => "NULL::text".into(),
    }
}

fn count_repairable(d: &Detectable) -> (i64, Vec<String>) {
    let mut params = Params::default();
    let sql = format!(
        "SELECT count(*), coalesce(array_agg(DISTINCT g) FILTER (WHERE g IS NOT NULL), '{{}}')
           FROM (SELECT {} AS g FROM {} t WHERE {}) s",
        group_expression(d, "t"),
        d.table.qualified(),
        d.predicate(&mut params).unwrap_or_else(|| "false".into())
    );
    let args = params.args();
    let (count, groups) = as_table_owner(d.table.oid, || crate::sql::two::<i64, Vec<String>>(&sql, &args));
    (count.unwrap_or(0), groups.unwrap_or_default())
}

/// Updates the violating rows as the table's owner, then logs their
/// previous images.
fn repair_rule(d: &Detectable) -> (i64, Vec<String>) {
    let Some(repair) = d.rule.spec.repair() else {
        return (0, Vec::new());
    };
    let columns = catalog::columns(d.table.oid);
    let mut params = Params::default();
    let mut assignments: Vec<String> = Vec::new();
    for (name, value) in &repair.set {
        let Some(column) = columns.iter().find(|c| &c.name == name) else {
            InvariantError::new(
                Code::ERRCODE_UNDEFINED_COLUMN,
                format!(
                    "rule \"{}\" repairs column \"{name}\", which no longer exists",
                    d.rule.name
                ),
            )
            .raise()
        };
        let value = match repair_value_text(value).unwrap_or_else(|e| InvariantError::from(e).raise()) {
            Some(text) => values::typed(&d.table, column, &[text])
                .into_iter()
                .next()
                .map_or_else(|| "NULL".into(), |value| params.push(value)),
            None => "NULL".into(),
        };
        assignments.push(format!("{} = {value}", quote_ident(name)));
    }
    let predicate = d.predicate(&mut params).unwrap_or_else(|| "false".into());
    for name in &repair.touch {
        assignments.push(format!("{} = pg_catalog.now()", quote_ident(name)));
    }
    // The rows' previous images go to the log first, the rows locked for
    // the UPDATE that follows.
    let args = params.args();
    let locked = format!(
        "SELECT t.* FROM {} t WHERE {predicate} FOR UPDATE OF t",
        d.table.qualified()
    );
    capture("REPAIR", &d.table, &locked, &args, None, &Default::default());
    let sql = format!(
        "UPDATE {table} AS t SET {sets} WHERE {predicate} RETURNING {group}",
        table = d.table.qualified(),
        sets = assignments.join(", "),
        group = group_expression(d, "t"),
    );
    // Logged as REPAIR above: not captured again as an UPDATE.
    let (fixed, mut groups): (i64, Vec<String>) = crate::xact::own_update(|| {
        as_table_owner(d.table.oid, || {
            Spi::connect_mut(|client| {
                let result = spi(client.update(&sql, None, &args));
                let mut fixed = 0;
                let mut groups = Vec::new();
                for row in result {
                    fixed += 1;
                    if let Some(group) = spi(row.get::<String>(1)) {
                        groups.push(group);
                    }
                }
                (fixed, groups)
            })
        })
    });
    groups.sort();
    groups.dedup();
    (fixed, groups)
}

const JOB_NAME: &str = "pg_invariants_repair";

fn require_pg_cron() {
    let installed = crate::sql::one::<bool>(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'pg_cron')",
        &[],
    );
    if installed != Some(true) {
        InvariantError::new(Code::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, "pg_cron is not installed in this database")
            .detail("invariants.schedule_repair registers invariants.repair() as a pg_cron job.")
            .hint("Add pg_cron to shared_preload_libraries, restart, and run CREATE EXTENSION pg_cron; or call SELECT * FROM invariants.repair() from your own scheduler.")
            .raise();
    }
}

/// Registers `SELECT invariants.repair()` with pg_cron; returns the job id.
/// Calling it again changes the schedule of the same job.
#[pg_extern(schema = "invariants")]
fn schedule_repair(every: default!(Option<&str>, "'* * * * *'")) -> i64 {
    pinned(|| {
        let Some(every) = every else {
            fail(Code::ERRCODE_NULL_VALUE_NOT_ALLOWED, "argument every must not be NULL")
        };
        if !plausible_schedule(every) {
            InvariantError::new(
                Code::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("argument every: {} is not a pg_cron schedule", quote_literal(every)),
            )
            .hint("Use five cron fields ('*/5 * * * *'), a macro ('@hourly') or 'N seconds'.")
            .raise();
        }
        require_pg_cron();
        spi(Spi::get_one_with_args::<i64>(
            "SELECT cron.schedule($1, $2, 'SELECT * FROM invariants.repair()')",
            &[JOB_NAME.into(), every.trim().into()],
        ))
        .unwrap_or(0)
    })
}

/// Removes the job `schedule_repair` registered; false if there was none.
#[pg_extern(schema = "invariants")]
fn unschedule_repair() -> bool {
    pinned(|| {
        require_pg_cron();
        let exists = crate::sql::one::<bool>(
            "SELECT EXISTS (SELECT FROM cron.job WHERE jobname = $1 AND username = current_user)",
            &[JOB_NAME.into()],
        );
        if exists != Some(true) {
            return false;
        }
        spi(Spi::get_one_with_args::<bool>(
            "SELECT cron.unschedule($1)",
            &[JOB_NAME.into()],
        ))
        .unwrap_or(false)
    })
}
