//! Settings under the `invariants.` prefix. Anything that lowers protection
//! is settable by superusers only (`Suset`); see the README.
use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};

/// Record the client's statement text in `invariants.audit_log.statement`.
pub static AUDIT_STATEMENT: GucSetting<bool> = GucSetting::<bool>::new(true);

pub fn register() {
    GucRegistry::define_bool_guc(
        c"invariants.audit_statement",
        c"Record the statement text in invariants.audit_log.",
        c"When on (the default), each audit_log row carries the text of the client statement that removed the row.",
        &AUDIT_STATEMENT,
        GucContext::Suset,
        GucFlags::default(),
    );
}
