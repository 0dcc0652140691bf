//! `invariants.health()`: one jsonb report of rule violations, protections
//! that are missing or switched off, and what to run to fix each.
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::{json, Value};

use pg_invariants_core::health::{health_score, status};

use crate::catalog::quote_literal;
use crate::guards::lint::{trigger_fix, trigger_problems};
use crate::privilege::pinned;
use crate::rules::violations::{count, detectable, percent};

#[pg_extern(schema = "invariants")]
fn health() -> JsonB {
    pinned(|| {
        let (detectable, broken) = detectable(None);
        let counts = count(&detectable);
        let total: i64 = counts.iter().map(|c| c.total).sum();
        let violating: i64 = counts.iter().map(|c| c.violating_any).sum();

        let mut rules = Vec::new();
        let mut recommendations = Vec::new();
        for table_counts in &counts {
            let table = table_counts.table.display();
            for (rule, rule_violating) in &table_counts.per_rule {
                let repairable = detectable.iter().any(|d| {
                    d.table.oid == table_counts.table.oid && &d.rule.name == rule && d.rule.spec.repair().is_some()
                });
                rules.push(json!({
                    "table": table,
                    "rule": rule,
                    "violating": rule_violating,
                    "total": table_counts.total,
                    "pct": percent(*rule_violating, table_counts.total).to_string().parse::<f64>().unwrap_or(0.0),
                    "repairable": repairable,
                }));
                if *rule_violating > 0 {
                    let args = format!("{}, {}", quote_literal(&table), quote_literal(rule));
                    recommendations.push(if repairable {
                        format!("{rule_violating} rows of {table} violate rule \"{rule}\": SELECT * FROM invariants.repair({args});")
                    } else {
                        format!("{rule_violating} rows of {table} violate rule \"{rule}\", which has no repair: inspect them with SELECT * FROM invariants.violating_rows({args});")
                    });
                }
            }
        }

        let mut protections = Vec::new();
        for b in &broken {
            let table = b.table.display();
            protections.push(json!({"table": table, "protection": "rules", "state": "broken", "problem": b.problem}));
            recommendations.push(format!(
                "{}: drop it with SELECT invariants.drop_rule({}, {}); and declare it again.",
                b.problem,
                quote_literal(&table),
                quote_literal(&b.rule)
            ));
        }
        for (table, trigger, capability, state) in trigger_problems() {
            protections.push(json!({"table": table, "protection": capability, "state": state,
                                    "problem": format!("trigger {trigger} is {state}")}));
            recommendations.push(format!(
                "The {capability} of {table} is off (trigger {trigger} is {state}): {}",
                trigger_fix(&table, &trigger, &capability, &state)
            ));
        }
        if detectable.iter().any(|d| d.rule.spec.repair().is_some()) && !repair_scheduled() {
            recommendations.push(
                "Repairs run only when called: schedule them with SELECT invariants.schedule_repair('*/5 * * * *'); (needs pg_cron).".into(),
            );
        }

        JsonB(json!({
            "health_score": health_score(violating, total),
            "status": status(violating, total),
            "rows": {"total": total, "violating": violating},
            "rules": Value::Array(rules),
            "protections": Value::Array(protections),
            // How DELETE on a soft-delete table works in this session (README).
            "soft_delete_mode": if crate::soft_delete::preload::active() { "preload" } else { "trigger" },
            "recommendations": recommendations,
        }))
    })
}

fn repair_scheduled() -> bool {
    let has_cron = crate::sql::one::<bool>(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'pg_cron')",
        &[],
    );
    has_cron == Some(true)
        && crate::sql::one::<bool>(
            "SELECT EXISTS (SELECT FROM cron.job WHERE jobname = 'pg_invariants_repair')",
            &[],
        ) == Some(true)
}
