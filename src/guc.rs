//! Settings under the `invariants.` prefix. `audit_statement` is for
//! superusers only; the guards' switches can be set by anyone but are
//! honored only for the owner of the table they would unlock (see
//! `guards::switch_allows`), so an application role gains nothing by them.
use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};

/// Record the client's statement text in `invariants.audit_log.statement`.
pub static AUDIT_STATEMENT: GucSetting<bool> = GucSetting::<bool>::new(true);

/// Session settings whose values each audit capture records (in
/// `audit_log.context`), separated by commas: who did it, as the
/// application knows them.
pub static AUDIT_CONTEXT: GucSetting<Option<std::ffi::CString>> = GucSetting::<Option<std::ffi::CString>>::new(None);

/// Lets the table's owner TRUNCATE a protected table in this transaction.
pub static ALLOW_TRUNCATE: GucSetting<bool> = GucSetting::<bool>::new(false);

/// Lets the table's owner DROP a protected table, one of its columns, or one
/// of the extension's triggers on it, in this transaction.
pub static ALLOW_DROP: GucSetting<bool> = GucSetting::<bool>::new(false);
pub static ALLOW_UNDELETE: GucSetting<bool> = GucSetting::<bool>::new(false);

/// Overrides a protected table's max_delete_rows for its owner (0 = no
/// limit; -1, the default, keeps the table's own).
pub static MAX_DELETE_ROWS: GucSetting<i32> = GucSetting::<i32>::new(-1);

/// Overrides a protected table's max_update_rows for its owner (0 = no
/// limit; -1, the default, keeps the table's own).
pub static MAX_UPDATE_ROWS: GucSetting<i32> = GucSetting::<i32>::new(-1);

pub fn register() {
    GucRegistry::define_bool_guc(
        c"invariants.audit_statement",
        c"Record the statement text in invariants.audit_log.",
        c"When on (the default), each audit_log row carries the text of the client statement that removed the row.",
        &AUDIT_STATEMENT,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"invariants.audit_context",
        c"Session settings recorded with each audit capture, separated by commas.",
        c"For example 'app.user_id, request.jwt.claim.sub': their values at capture time go into invariants.audit_log.context.",
        &AUDIT_CONTEXT,
        GucContext::Suset,
        GucFlags::default(),
    );
    // Settable by anyone, honored only for the table's owner (see guards).
    GucRegistry::define_bool_guc(
        c"invariants.allow_truncate",
        c"Allow TRUNCATE of protected tables the current user owns.",
        c"Use SET LOCAL; the truncated rows are still copied to invariants.audit_log.",
        &ALLOW_TRUNCATE,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"invariants.allow_drop",
        c"Allow dropping protected tables (or their columns, or pg_invariants' triggers on them) the current user owns.",
        c"Use SET LOCAL; each allowed drop is recorded in invariants.audit_log.",
        &ALLOW_DROP,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"invariants.allow_undelete",
        c"Let UPDATEs reach soft-deleted rows of soft-delete tables the current user owns.",
        c"Use SET LOCAL, for repairs by hand; invariants.undelete() needs no switch.",
        &ALLOW_UNDELETE,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"invariants.max_delete_rows",
        c"Rows a transaction may delete from each protected table the current user owns (0 = no limit).",
        c"-1, the default, keeps each table's own max_delete_rows.",
        &MAX_DELETE_ROWS,
        -1,
        i32::MAX,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"invariants.max_update_rows",
        c"Rows a transaction may update in each protected table the current user owns (0 = no limit).",
        c"-1, the default, keeps each table's own max_update_rows.",
        &MAX_UPDATE_ROWS,
        -1,
        i32::MAX,
        GucContext::Userset,
        GucFlags::default(),
    );
    // A misspelt setting (invariants.alow_drop) is an error, not a silent
    // placeholder; placeholders set before the library loaded are removed
    // with a WARNING.
    // SAFETY: called once from _PG_init, after the settings are defined.
    unsafe { pgrx::pg_sys::MarkGUCPrefixReserved(c"invariants".as_ptr()) };
}

/// The values of the settings `invariants.audit_context` names, now: an
/// object of setting to value (null when unset); None when it names none.
pub fn audit_context() -> Option<pgrx::JsonB> {
    let list = AUDIT_CONTEXT.get()?;
    let list = list.to_string_lossy();
    let mut object = serde_json::Map::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let c_name = std::ffi::CString::new(name).ok()?;
        // SAFETY: reads a setting by name; NULL when it does not exist,
        // since missing_ok is true.
        let value = unsafe {
            let value = pgrx::pg_sys::GetConfigOption(c_name.as_ptr(), true, false);
            (!value.is_null()).then(|| std::ffi::CStr::from_ptr(value).to_string_lossy().into_owned())
        };
        object.insert(
            name.to_string(),
            value
                .filter(|v| !v.is_empty())
                .map_or(serde_json::Value::Null, serde_json::Value::String),
        );
    }
    (!object.is_empty()).then_some(pgrx::JsonB(serde_json::Value::Object(object)))
}
