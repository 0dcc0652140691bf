//! Compiles the extension's C part (src/c/): the planner hook, which must
//! call Postgres' planner with no Rust frame in between. Its headers are
//! those of the Postgres that pgrx builds for (the `pgNN` feature).
fn main() {
    println!("cargo:rerun-if-changed=src/c");
    println!("cargo:rerun-if-env-changed=PGRX_PG_CONFIG_PATH");
    let Some(version) = (13..=18)
        .map(|v| format!("pg{v}"))
        .find(|v| std::env::var_os(format!("CARGO_FEATURE_{}", v.to_uppercase())).is_some())
    else {
        panic!("build with one of the features pg13 ... pg18");
    };
    let include = pgrx_pg_config::Pgrx::from_config()
        .and_then(|pgrx| pgrx.get(&version))
        .and_then(|pg_config| pg_config.includedir_server())
        .unwrap_or_else(|e| panic!("no pg_config for {version} (run cargo pgrx init): {e}"));
    cc::Build::new()
        .file("src/c/planner_hook.c")
        .include(include)
        .warnings(true)
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-missing-field-initializers")
        .compile("pg_invariants_c");
}
