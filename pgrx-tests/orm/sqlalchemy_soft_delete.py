"""SQLAlchemy against soft-delete tables, on the cluster that preloads
pg_invariants and on the one that does not (PGI_HOST, PGI_PRELOAD_PORT,
PGI_PORT), with warnings turned into errors:

- session.delete sees exactly one row deleted when preloaded, and the row
  stays in the table, soft-deleted (without preloading, SQLAlchemy raises
  StaleDataError for the DELETE 0, with a version column);
- a stale save (the row loaded, deleted by another session, then edited
  and saved) raises StaleDataError through the version counter, and the row
  stays deleted, in both modes.
"""
import os
import sys
import warnings

import psycopg2
from sqlalchemy import Column, DateTime, Integer, Text, create_engine, text
from sqlalchemy.orm import Session, declarative_base
from sqlalchemy.orm.exc import StaleDataError

warnings.simplefilter("error")

HOST = os.environ.get("PGI_HOST", "127.0.0.1")
MODES = [
    ("preload", int(os.environ.get("PGI_PRELOAD_PORT", "28919"))),
    ("trigger", int(os.environ.get("PGI_PORT", "28916"))),
]
DB = "pgi_orm_sqlalchemy"

Base = declarative_base()


class User(Base):
    __tablename__ = "users"
    id = Column(Integer, primary_key=True)
    email = Column(Text)
    version = Column(Integer, nullable=False)
    deleted_at = Column(DateTime(timezone=True))
    __mapper_args__ = {"version_id_col": version}


def fresh_database(port):
    admin = psycopg2.connect(host=HOST, port=port, user="postgres", dbname="postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        cur.execute(f"CREATE DATABASE {DB}")
    admin.close()
    engine = create_engine(f"postgresql+psycopg2://postgres@{HOST}:{port}/{DB}")
    with engine.begin() as conn:
        conn.execute(text("CREATE EXTENSION pg_invariants"))
        conn.execute(text("CREATE TABLE users (id int PRIMARY KEY, email text, version int NOT NULL,"
                          " deleted_at timestamptz)"))
        conn.execute(text("INSERT INTO users VALUES (1, 'ana@example.com', 1), (2, 'bo@example.com', 1),"
                          " (3, 'cy@example.com', 1)"))
        conn.execute(text("SELECT invariants.enable_soft_delete('users')"))
    return engine


def deleted(engine, user_id):
    with engine.connect() as conn:
        row = conn.execute(text("SELECT deleted_at IS NOT NULL FROM users WHERE id = :id"), {"id": user_id}).fetchone()
    return row is not None and row[0]


checks = 0
failures = []
for mode, port in MODES:
    engine = fresh_database(port)

    # session.delete: one row deleted when preloaded. Without preloading
    # Postgres reports DELETE 0, and SQLAlchemy (which checks the count
    # strictly for a versioned mapping) raises StaleDataError and rolls the
    # delete back.
    checks += 1
    try:
        with Session(engine) as session:
            session.delete(session.get(User, 1))
            session.commit()
        if mode == "trigger":
            failures.append(f"{mode}: session.delete raised nothing for DELETE 0")
        if not deleted(engine, 1):
            failures.append(f"{mode}: the row is gone or not soft-deleted")
    except StaleDataError as error:
        if mode == "preload":
            failures.append(f"{mode}: session.delete raised {error}")

    # A stale save raises, and the row stays deleted.
    checks += 1
    with Session(engine) as session:
        user = session.get(User, 2)
        with engine.begin() as other:
            other.execute(text("DELETE FROM users WHERE id = 2"))
        user.email = "edited@example.com"
        user.deleted_at = None
        try:
            session.commit()
            failures.append(f"{mode}: the stale save committed")
        except StaleDataError:
            session.rollback()
    if not deleted(engine, 2):
        failures.append(f"{mode}: the stale save brought the row back")

    # Connection-level DELETE reports the rows soft-deleted when preloaded.
    checks += 1
    with engine.connect() as conn:
        result = conn.execute(text("DELETE FROM users WHERE id = 3"))
        expected = 1 if mode == "preload" else 0
        if result.rowcount != expected:
            failures.append(f"{mode}: DELETE rowcount = {result.rowcount}, expected {expected}")
        conn.commit()
    engine.dispose()

for failure in failures:
    print(f"sqlalchemy: FAILED: {failure}")
print(f"sqlalchemy: {checks - len(failures)} passed, {len(failures)} failed")
sys.exit(1 if failures else 0)
