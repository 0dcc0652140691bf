//! Fixture for the client-side tests. `scripts/test` starts two clusters
//! with the freshly installed extension: one plain (`PGI_PORT`) and one with
//! the library in shared_preload_libraries (`PGI_PRELOAD_PORT`), on host
//! `PGI_HOST`, and passes the server's binaries directory in `PGI_BIN`.
use postgres::{Client, NoTls};

pub fn host() -> String {
    std::env::var("PGI_HOST").unwrap_or_else(|_| "127.0.0.1".into())
}

pub fn port() -> u16 {
    std::env::var("PGI_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(28916)
}

pub fn preload_port() -> u16 {
    std::env::var("PGI_PRELOAD_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(28919)
}

pub fn bin(tool: &str) -> String {
    let dir = std::env::var("PGI_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into());
    format!("{dir}/{tool}")
}

/// Connects to `db` on the cluster at `port` as `user`.
pub fn connect_on(port: u16, db: &str, user: &str) -> Client {
    let config = format!(
        "host={} port={port} user={user} dbname={db} application_name=pgi_tests",
        host()
    );
    Client::connect(&config, NoTls).unwrap_or_else(|e| panic!("connect to {db} on {port} as {user}: {e}"))
}

/// Connects to `db` on the plain cluster as `user`.
pub fn connect_as(db: &str, user: &str) -> Client {
    connect_on(port(), db, user)
}

pub fn connect(db: &str) -> Client {
    connect_as(db, "postgres")
}

/// A database made afresh for one test, with the extension created.
pub struct TestDb {
    pub name: String,
    pub port: u16,
}

impl TestDb {
    pub fn new(name: &str) -> TestDb {
        Self::without_extension(name).with_extension()
    }

    /// The same on the cluster that preloads the library.
    pub fn preloaded(name: &str) -> TestDb {
        Self::create(name, preload_port()).with_extension()
    }

    pub fn without_extension(name: &str) -> TestDb {
        Self::create(name, port())
    }

    fn create(name: &str, port: u16) -> TestDb {
        let mut admin = connect_on(port, "postgres", "postgres");
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .unwrap();
        admin.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        TestDb {
            name: name.to_string(),
            port,
        }
    }

    fn with_extension(self) -> TestDb {
        self.client().batch_execute("CREATE EXTENSION pg_invariants").unwrap();
        self
    }

    pub fn client(&self) -> Client {
        connect_on(self.port, &self.name, "postgres")
    }

    pub fn client_as(&self, user: &str) -> Client {
        connect_on(self.port, &self.name, user)
    }
}

/// Creates a login role, where missing, on both clusters (roles are shared
/// by every database of a cluster).
pub fn fresh_role(name: &str) {
    for port in [port(), preload_port()] {
        let mut admin = connect_on(port, "postgres", "postgres");
        let exists: bool = admin
            .query_one("SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1)", &[&name])
            .unwrap()
            .get(0);
        if !exists {
            admin.batch_execute(&format!("CREATE ROLE {name} LOGIN")).unwrap();
        }
    }
}

/// The SQLSTATE of a failed statement.
pub fn sqlstate(result: Result<impl Sized, postgres::Error>) -> String {
    match result {
        Ok(_) => panic!("expected the statement to fail"),
        Err(e) => e
            .code()
            .map(|c| c.code().to_string())
            .unwrap_or_else(|| format!("no SQLSTATE: {e}")),
    }
}

/// The single value (a count, a bigint) of a query that returns one row.
pub fn one(c: &mut Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).unwrap().get(0)
}

/// The version of pg_invariants installed in the database.
pub fn installed_version(c: &mut Client) -> String {
    c.query_one(
        "SELECT extversion FROM pg_extension WHERE extname = 'pg_invariants'",
        &[],
    )
    .unwrap()
    .get(0)
}
