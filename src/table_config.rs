//! What the capabilities declare on a table, read in one query over the
//! table and its ancestors, and cached per relation (see `relcache`) until
//! the table or a declaration changes: the trigger paths ask it on every
//! statement. Each capability's declarations apply to the table from the
//! nearest table above it (or itself) that has one.
use std::rc::Rc;

use pgrx::pg_sys::Oid;
use pgrx::prelude::*;

use crate::catalog::spi;
use crate::relcache;

/// How a table is audited.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    /// The table the settings are declared on.
    pub declared_on: Oid,
    pub truncate_capture_limit: i64,
    /// UPDATEs are captured too.
    pub updates: bool,
    /// Columns never written to the log.
    pub exclude: Vec<String>,
}

/// The guards on a protected table.
#[derive(Debug, Clone)]
pub struct Protection {
    /// The protected table: the table itself or one above it.
    pub table: Oid,
    pub max_delete_rows: i64,
    /// None: UPDATEs are not counted.
    pub max_update_rows: Option<i64>,
}

/// A soft-delete table's setting.
#[derive(Debug, Clone)]
pub struct SoftDelete {
    pub column: String,
    /// Soft deletes cascade along ON DELETE CASCADE keys (declared so on
    /// the table or on any table above it).
    pub cascade: bool,
}

#[derive(Debug, Clone, Default)]
pub struct TableConfig {
    pub audit: Option<AuditSettings>,
    pub protection: Option<Protection>,
    pub soft_delete: Option<SoftDelete>,
}

impl TableConfig {
    /// The declarations that apply to `relid`.
    pub fn of(relid: Oid) -> Rc<TableConfig> {
        relcache::get_or_build(relid, || read(relid))
    }

    /// True for a table whose rows no statement may take without a copy or
    /// a refusal: audited, protected or soft-delete.
    pub fn keeps_rows(&self) -> bool {
        self.audit.is_some() || self.protection.is_some() || self.soft_delete.is_some()
    }
}

fn read(relid: Oid) -> TableConfig {
    let mut config = TableConfig::default();
    Spi::connect(|client| {
        let rows = spi(client.select(
            "WITH RECURSIVE up(relid, depth) AS (
                 SELECT $1::pg_catalog.oid, 0
                 UNION
                 SELECT i.inhparent, u.depth + 1 FROM pg_catalog.pg_inherits i JOIN up u ON i.inhrelid = u.relid),
             lineage AS (SELECT relid, min(depth) AS depth FROM up GROUP BY relid)
             SELECT l.relid, a.truncate_capture_limit, a.updates, a.exclude,
                    p.max_delete_rows, p.max_update_rows, s.column_name, s.\"cascade\"
               FROM lineage l
               LEFT JOIN invariants.audited_tables a ON a.tbl = l.relid::pg_catalog.regclass
               LEFT JOIN invariants.protected_tables p ON p.tbl = l.relid::pg_catalog.regclass
               LEFT JOIN invariants.soft_delete_tables s ON s.tbl = l.relid::pg_catalog.regclass
              ORDER BY l.depth, l.relid",
            None,
            &[relid.into()],
        ));
        let mut cascade = false;
        for row in rows {
            let Some(oid) = spi(row.get::<Oid>(1)) else { continue };
            if let (None, Some(limit)) = (&config.audit, spi(row.get::<i64>(2))) {
                config.audit = Some(AuditSettings {
                    declared_on: oid,
                    truncate_capture_limit: limit,
                    updates: spi(row.get::<bool>(3)).unwrap_or(false),
                    exclude: spi(row.get::<Vec<String>>(4)).unwrap_or_default(),
                });
            }
            if let (None, Some(max_delete_rows)) = (&config.protection, spi(row.get::<i64>(5))) {
                config.protection = Some(Protection {
                    table: oid,
                    max_delete_rows,
                    max_update_rows: spi(row.get::<i64>(6)),
                });
            }
            if let (None, Some(column)) = (&config.soft_delete, spi(row.get::<String>(7))) {
                config.soft_delete = Some(SoftDelete { column, cascade: false });
            }
            cascade |= spi(row.get::<bool>(8)) == Some(true);
        }
        if let Some(soft_delete) = config.soft_delete.as_mut() {
            soft_delete.cascade = cascade;
        }
    });
    config
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::pg_sys::Oid;

    use super::TableConfig;
    use crate::testing::run;

    fn oid(name: &str) -> Oid {
        crate::catalog::oid_of(name).expect("the table exists")
    }

    #[pgrx::pg_test]
    fn a_partition_takes_each_setting_from_the_nearest_table_that_declares_it() {
        run("CREATE TABLE events (id int, k int, deleted_at timestamptz) PARTITION BY LIST (k)");
        run("CREATE TABLE events_1 PARTITION OF events FOR VALUES IN (1) PARTITION BY LIST (id)");
        run("CREATE TABLE events_1_1 PARTITION OF events_1 FOR VALUES IN (1)");
        run("SELECT invariants.enable_audit('events', truncate_capture_limit => 7, exclude => ARRAY['k'])");
        run("SELECT invariants.enable_audit('events_1', truncate_capture_limit => 9)");
        run("SELECT invariants.protect('events', max_delete_rows => 3)");
        let leaf = TableConfig::of(oid("events_1_1"));
        let audit = leaf.audit.as_ref().expect("audited through events_1");
        assert_eq!((audit.declared_on, audit.truncate_capture_limit), (oid("events_1"), 9));
        assert!(audit.exclude.is_empty(), "the nearest declaration wins whole");
        let protection = leaf.protection.as_ref().expect("protected through events");
        assert_eq!((protection.table, protection.max_delete_rows), (oid("events"), 3));
        assert!(leaf.soft_delete.is_none());
        assert!(leaf.keeps_rows());
        // A change in this transaction is seen at once, above and below.
        run("SELECT invariants.enable_audit('events_1', truncate_capture_limit => 11, exclude => ARRAY['id'])");
        run("SELECT invariants.enable_soft_delete('events', cascade => false)");
        let leaf = TableConfig::of(oid("events_1_1"));
        let audit = leaf.audit.as_ref().expect("audited through events_1");
        assert_eq!((audit.declared_on, audit.truncate_capture_limit), (oid("events_1"), 11));
        assert_eq!(audit.exclude, ["id"]);
        let soft_delete = leaf.soft_delete.as_ref().expect("soft delete through events");
        assert_eq!(
            (soft_delete.column.as_str(), soft_delete.cascade),
            ("deleted_at", false)
        );
        let unrelated = TableConfig::of(oid("pg_catalog.pg_class"));
        assert!(!unrelated.keeps_rows());
    }
}
