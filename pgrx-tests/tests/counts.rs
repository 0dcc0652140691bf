//! Cross-table counts under real concurrency: sessions add and remove
//! children of the same parents, some keeping the parent's count right and
//! some not. No mismatch may commit, and no session that kept its own counts
//! right may be refused (serialization failures at REPEATABLE READ aside).
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

use pg_invariants_client_tests::TestDb;
use postgres::IsolationLevel;

const SESSIONS: usize = 8;
const ROUNDS: usize = 40;
const PARENTS: i32 = 4;

#[derive(Default)]
struct Tally {
    good_committed: AtomicU64,
    good_refused: AtomicU64,
    bad_committed: AtomicU64,
    bad_refused: AtomicU64,
    serialization_failures: AtomicU64,
}

/// A small deterministic generator, so that a failure can be replayed.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn run(db_name: &str, isolation: IsolationLevel) {
    let db = TestDb::new(db_name);
    db.client()
        .batch_execute(&format!(
            "CREATE TABLE import_sessions (id int PRIMARY KEY, total int NOT NULL);
             CREATE TABLE prospects (id serial PRIMARY KEY, session_id int NOT NULL REFERENCES import_sessions);
             CREATE INDEX ON prospects (session_id);
             INSERT INTO import_sessions SELECT i, 0 FROM generate_series(1, {PARENTS}) i;
             SELECT invariants.require_count('import_sessions', 'total', 'prospects', 'session_id');"
        ))
        .unwrap();
    let tally = Arc::new(Tally::default());
    let threads: Vec<_> = (0..SESSIONS)
        .map(|session| {
            let tally = tally.clone();
            let mut client = db.client();
            thread::spawn(move || {
                let mut seed = 0x9E37_79B9_7F4A_7C15 ^ (session as u64 + 1);
                for _ in 0..ROUNDS {
                    let parent = (next(&mut seed) % PARENTS as u64) as i32 + 1;
                    let choice = next(&mut seed) % 8;
                    let good = choice < 6;
                    let mut tx = client.build_transaction().isolation_level(isolation).start().unwrap();
                    let body = match choice {
                        // Good: a child and its count together (add or remove).
                        0..=2 => tx
                            .execute("INSERT INTO prospects (session_id) VALUES ($1)", &[&parent])
                            .and_then(|_| {
                                tx.execute("UPDATE import_sessions SET total = total + 1 WHERE id = $1", &[&parent])
                            }),
                        3..=5 => tx
                            .execute(
                                "DELETE FROM prospects WHERE id = (SELECT id FROM prospects WHERE session_id = $1
                                  ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)",
                                &[&parent],
                            )
                            .and_then(|deleted| {
                                if deleted == 1 {
                                    tx.execute("UPDATE import_sessions SET total = total - 1 WHERE id = $1", &[&parent])
                                } else {
                                    Ok(0)
                                }
                            }),
                        // Bad: a child without its count, or a count without its child.
                        6 => tx.execute("INSERT INTO prospects (session_id) VALUES ($1)", &[&parent]),
                        _ => tx.execute("UPDATE import_sessions SET total = total + 1 WHERE id = $1", &[&parent]),
                    };
                    let outcome = body.and_then(|_| tx.commit());
                    let counter = match (&outcome, good) {
                        (Ok(()), true) => &tally.good_committed,
                        (Ok(()), false) => &tally.bad_committed,
                        (Err(e), _) if e.code().is_some_and(|c| c.code() == "40001" || c.code() == "40P01") => {
                            &tally.serialization_failures
                        }
                        (Err(e), true) => {
                            eprintln!("good transaction refused: {e:?}");
                            &tally.good_refused
                        }
                        (Err(e), false) => {
                            assert_eq!(e.code().map(|c| c.code()), Some("23514"), "{e:?}");
                            &tally.bad_refused
                        }
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }

    let mismatches: i64 = db
        .client()
        .query_one(
            "SELECT count(*) FROM import_sessions s
              WHERE s.total <> (SELECT count(*) FROM prospects p WHERE p.session_id = s.id)",
            &[],
        )
        .unwrap()
        .get(0);
    let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
    println!(
        "{db_name}: good committed {}, good refused {}, bad committed {}, bad refused {}, serialization failures {}",
        read(&tally.good_committed),
        read(&tally.good_refused),
        read(&tally.bad_committed),
        read(&tally.bad_refused),
        read(&tally.serialization_failures)
    );
    assert_eq!(mismatches, 0, "a mismatch was committed");
    assert_eq!(
        read(&tally.good_refused),
        0,
        "a transaction that kept its counts right was refused"
    );
    assert_eq!(
        read(&tally.bad_committed),
        0,
        "a transaction that broke a count was committed"
    );
    assert!(read(&tally.good_committed) > 0 && read(&tally.bad_refused) > 0);
}

#[test]
fn concurrent_sessions_at_read_committed() {
    run("pgi_counts_rc", IsolationLevel::ReadCommitted);
}

#[test]
fn concurrent_sessions_at_repeatable_read() {
    run("pgi_counts_rr", IsolationLevel::RepeatableRead);
}
