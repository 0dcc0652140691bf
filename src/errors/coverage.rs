//! Which of the extension's errors the tests raise. When the server's
//! configuration sets `pg_invariants_test.error_coverage` (a placeholder
//! setting, not one of the extension's) to a file, every error raised
//! appends the source location where it was made (`src/...rs:line`) to it;
//! `scripts/error-coverage` compares that with every place in the source
//! that makes one. Otherwise this costs one lookup per error.
use std::ffi::CStr;
use std::io::Write;
use std::panic::Location;

pub fn record(site: &Location<'static>) {
    // SAFETY: reads a setting by name; NULL when it does not exist, since
    // missing_ok is true.
    let path = unsafe {
        let value = pgrx::pg_sys::GetConfigOption(c"pg_invariants_test.error_coverage".as_ptr(), true, false);
        if value.is_null() {
            return;
        }
        CStr::from_ptr(value).to_string_lossy().into_owned()
    };
    if path.is_empty() {
        return;
    }
    // Best effort: a run that cannot write it reports the sites as never
    // raised.
    if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = writeln!(file, "{}:{}", site.file(), site.line());
    }
}
