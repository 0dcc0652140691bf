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
