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
