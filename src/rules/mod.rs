//! Row-state rules (incident 1): declared once, and from that one
//! declaration enforced by a trigger, detected in stored rows, and repaired.
//!
//! - `declare.rs`: `add_rule`, its shorthands, `drop_rule`, the `rules` view
//!   and the installation of the `invariants_rules` trigger;
//! - `enforce_rules.rs`: the trigger function `invariants.enforce_rules()`;
//! - `violations.rs`: `violations()` and `violating_rows()`;
//! - `repair.rs`: `repair()`, `schedule_repair()`, `unschedule_repair()`;
//! - `require_count.rs`: `require_count()` and its commit-time count check;
//! - `spec.rs`: the rule declarations and their validation.
pub mod declare;
pub mod enforce_rules;
pub mod repair;
pub mod require_count;
pub mod spec;
pub mod values;
pub mod violations;

use pgrx::pg_sys::Oid;
use pgrx::prelude::*;

use crate::catalog::spi;
use crate::errors::InvariantError;
use spec::RuleSpec;

pub const CAPABILITY: crate::registry::Capability = crate::registry::Capability {
    triggers,
    follow_column_rename,
};

/// The row rules' trigger and the count rules' triggers `relid` needs.
fn triggers(relid: Oid, lineage: &[Oid]) -> Vec<crate::registry::Trigger> {
    let mut triggers = declare::triggers(relid, lineage);
    triggers.extend(require_count::triggers(relid, lineage));
    triggers
}

/// A stored rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub tbl: Oid,
    pub name: String,
    pub spec: RuleSpec,
}

/// The rules declared on the given tables (all tables when `tables` is None),
/// ordered by table and name.
pub fn load(tables: Option<&[Oid]>) -> Result<Vec<Rule>, InvariantError> {
    let oids: Option<Vec<Oid>> = tables.map(|t| t.to_vec());
    let rows: Vec<(Oid, String, String, pgrx::JsonB, Option<Oid>)> = Spi::connect(|client| {
        let rows = spi(client.select(
            "SELECT tbl::oid, name, kind, spec, child::oid FROM invariants.rule_definitions
              WHERE $1::oid[] IS NULL OR tbl::oid = ANY ($1)
              ORDER BY tbl::oid, name",
            None,
            &[oids.into()],
        ));
        rows.map(|row| {
            (
                spi(row.get::<Oid>(1)).unwrap_or(pgrx::pg_sys::InvalidOid),
                spi(row.get::<String>(2)).unwrap_or_default(),
                spi(row.get::<String>(3)).unwrap_or_default(),
                spi(row.get::<pgrx::JsonB>(4)).unwrap_or(pgrx::JsonB(serde_json::Value::Null)),
                spi(row.get::<Oid>(5)),
            )
        })
        .collect()
    });
    rows.into_iter()
        .map(|(tbl, name, kind, spec, child)| {
            let mut spec = RuleSpec::parse(&kind, &spec.0)?;
            // A count rule's child by its current name, whatever it was
            // called when declared.
            if let (RuleSpec::RequireCount(count), Some(child)) = (&mut spec, child) {
                count.child = crate::catalog::Table::lookup(child)
                    .map_or_else(|| format!("(dropped table {})", child.to_u32()), |t| t.qualified());
            }
            Ok(Rule { tbl, name, spec })
        })
        .collect()
}

#[cfg(any(test, feature = "pg_test"))]
mod count_tests;
#[cfg(any(test, feature = "pg_test"))]
mod tests;

/// Follows the rename of column `old` of `relid` to `new` in every rule
/// that names it (declared on the table, or counting it as a child), so
/// that a rename changes nothing.
pub fn follow_column_rename(relid: Oid, old: &str, new: &str) {
    let rules = match load(None) {
        Ok(rules) => rules,
        Err(_) => return,
    };
    for mut rule in rules {
        let own = rule.tbl == relid;
        let child = matches!(&rule.spec, RuleSpec::RequireCount(c) if crate::catalog::oid_of(&c.child) == Some(relid));
        if !(own || child) || !rule.spec.rename_column(old, new, own, child) {
            continue;
        }
        let spec = rule.spec.to_json();
        crate::privilege::as_extension_owner(|| {
            spi(Spi::run_with_args(
                "UPDATE invariants.rule_definitions SET spec = $3 WHERE tbl = $1 AND name = $2",
                &[
                    crate::catalog::Regclass(rule.tbl).into(),
                    rule.name.as_str().into(),
                    pgrx::JsonB(spec).into(),
                ],
            ))
        });
    }
}
