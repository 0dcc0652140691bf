//! What a real client sees of a soft delete (the trigger path): the row
//! stays, and Postgres reports the DELETE as having removed nothing.
use pg_invariants_client_tests::TestDb;

#[test]
fn command_tag_and_returning_of_a_soft_delete() {
    let db = TestDb::new("pgi_soft_delete_tags");
    let mut c = db.client();
    c.batch_execute(
        "CREATE TABLE users (id int PRIMARY KEY, deleted_at timestamptz);
         CREATE TABLE talent (id int PRIMARY KEY, user_id int REFERENCES users ON DELETE CASCADE, deleted_at timestamptz);
         INSERT INTO users VALUES (1), (2), (3);
         INSERT INTO talent VALUES (1, 1), (2, 1);
         SELECT invariants.enable_soft_delete('users');",
    )
    .unwrap();
    // Simple query protocol: the command tag's row count.
    let affected = c.execute("DELETE FROM users WHERE id = 1", &[]).unwrap();
    assert_eq!(affected, 0, "a soft delete reports DELETE 0 without preloading");
    // Extended protocol, prepared statement, RETURNING.
    let statement = c.prepare("DELETE FROM users WHERE id = $1 RETURNING id").unwrap();
    let returned = c.query(&statement, &[&2]).unwrap();
    assert!(returned.is_empty(), "RETURNING returns no row without preloading");
    // The rows are all still there, soft-deleted, the cascade included.
    let deleted: i64 = c
        .query_one("SELECT count(*) FROM users WHERE deleted_at IS NOT NULL", &[])
        .unwrap()
        .get(0);
    assert_eq!(deleted, 2);
    let talent: i64 = c
        .query_one("SELECT count(*) FROM talent WHERE deleted_at IS NOT NULL", &[])
        .unwrap()
        .get(0);
    assert_eq!(talent, 2);
    let total: i64 = c.query_one("SELECT count(*) FROM users", &[]).unwrap().get(0);
    assert_eq!(total, 3);
    // Already deleted: still 0, and unchanged.
    let before: String = c
        .query_one("SELECT deleted_at::text FROM users WHERE id = 1", &[])
        .unwrap()
        .get(0);
    assert_eq!(c.execute("DELETE FROM users WHERE id = 1", &[]).unwrap(), 0);
    let after: String = c
        .query_one("SELECT deleted_at::text FROM users WHERE id = 1", &[])
        .unwrap()
        .get(0);
    assert_eq!(before, after);
}

/// An ORM's stale save after another session soft-deleted the row, on both
/// clusters (trigger mode and preloaded): the UPDATE reaches no row, so the
/// ORM's row count and version checks raise as after a hard delete.
#[test]
fn a_stale_save_does_not_bring_a_deleted_row_back() {
    pg_invariants_client_tests::fresh_role("pgi_stale_app");
    for db in [TestDb::new("pgi_stale_trigger"), TestDb::preloaded("pgi_stale_preload")] {
        let mut loader = db.client();
        loader
            .batch_execute(
                "CREATE TABLE vparent (id int PRIMARY KEY, name text, version int NOT NULL DEFAULT 1, deleted_at timestamptz);
                 CREATE TABLE vchild (id int PRIMARY KEY, parent_id int REFERENCES vparent ON DELETE CASCADE,
                                      deleted_at timestamptz);
                 INSERT INTO vparent (id, name) VALUES (1, 'one'), (2, 'two');
                 INSERT INTO vchild VALUES (10, 1), (11, 1), (20, NULL);
                 SELECT invariants.enable_soft_delete('vparent');
                 GRANT SELECT, UPDATE ON vparent TO pgi_stale_app;",
            )
            .unwrap();
        // The application loads the row; another session deletes it.
        let loaded: i32 = loader
            .query_one("SELECT version FROM vparent WHERE id = 1", &[])
            .unwrap()
            .get(0);
        db.client().batch_execute("DELETE FROM vparent WHERE id = 1").unwrap();
        // Hibernate's save: every column, checked by version.
        let saved = loader
            .execute(
                "UPDATE vparent SET deleted_at = $1, name = $2, version = $3 WHERE id = $4 AND version = $5",
                &[&None::<std::time::SystemTime>, &"edited", &(loaded + 1), &1i32, &loaded],
            )
            .unwrap();
        assert_eq!(saved, 0, "{}: the stale save matched no row", db.name);
        // Django's save: every column, by key.
        let saved = loader
            .execute(
                "UPDATE vparent SET name = 'edited', deleted_at = NULL WHERE id = 1",
                &[],
            )
            .unwrap();
        assert_eq!(saved, 0, "{}", db.name);
        // Only the changed column (SQLAlchemy), with RETURNING.
        let returned = loader
            .query("UPDATE vparent SET name = 'edited' WHERE id = 1 RETURNING id", &[])
            .unwrap();
        assert!(returned.is_empty(), "{}", db.name);
        let row = loader
            .query_one("SELECT name, deleted_at IS NOT NULL FROM vparent WHERE id = 1", &[])
            .unwrap();
        let row: (String, bool) = (row.get(0), row.get(1));
        assert_eq!(
            row,
            ("one".to_string(), true),
            "{}: the row stays deleted and unchanged",
            db.name
        );
        let children: i64 = loader
            .query_one(
                "SELECT count(*) FROM vchild WHERE parent_id = 1 AND deleted_at IS NOT NULL",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(children, 2, "{}", db.name);
        // Live rows update as before; a DELETE of a deleted row is DELETE 0.
        assert_eq!(
            loader
                .execute("UPDATE vparent SET name = 'deux' WHERE id = 2", &[])
                .unwrap(),
            1
        );
        assert_eq!(loader.execute("DELETE FROM vparent WHERE id = 1", &[]).unwrap(), 0);

        // An application role that sets the owner's switch is refused.
        let mut app = db.client_as("pgi_stale_app");
        app.batch_execute("SET invariants.allow_undelete = on").unwrap();
        let refused = app.execute("UPDATE vparent SET deleted_at = NULL WHERE id = 1", &[]);
        assert_eq!(pg_invariants_client_tests::sqlstate(refused), "42501", "{}", db.name);
        // The owner's switch reaches it, for a repair by hand.
        loader
            .batch_execute("BEGIN; SET LOCAL invariants.allow_undelete = on; UPDATE vparent SET name = 'fixed' WHERE id = 1; COMMIT;")
            .unwrap();
        let name: String = loader
            .query_one("SELECT name FROM vparent WHERE id = 1", &[])
            .unwrap()
            .get(0);
        assert_eq!(name, "fixed", "{}", db.name);
        // undelete and purge still reach deleted rows.
        let back: i64 = loader
            .query_one(
                "SELECT invariants.undelete('vparent', since => now() - interval '1 hour')",
                &[],
            )
            .unwrap()
            .get(0);
        assert!(back >= 1, "{}", db.name);
        let live: i64 = loader
            .query_one(
                "SELECT count(*) FROM vchild WHERE parent_id = 1 AND deleted_at IS NULL",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(live, 2, "{}: undelete brings the children back", db.name);
        loader.batch_execute("DELETE FROM vparent WHERE id = 2").unwrap();
        let purged: i64 = loader
            .query_one("SELECT invariants.purge('vparent', older_than => '0 seconds')", &[])
            .unwrap()
            .get(0);
        assert_eq!(purged, 1, "{}", db.name);
    }
}
