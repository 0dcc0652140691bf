"""SQLAlchemy deleting a row of a soft-delete table, with warnings turned
into errors: it must see exactly one row deleted, and the row must still be
in the table. Run by scripts/test against the cluster that preloads
pg_invariants (PGI_HOST, PGI_PRELOAD_PORT)."""
import os
import sys
import warnings

import psycopg2
from sqlalchemy import Column, DateTime, Integer, Text, create_engine, text
from sqlalchemy.orm import Session, declarative_base

warnings.simplefilter("error")

HOST = os.environ.get("PGI_HOST", "127.0.0.1")
PORT = int(os.environ.get("PGI_PRELOAD_PORT", "28919"))
DB = "pgi_orm_sqlalchemy"

admin = psycopg2.connect(host=HOST, port=PORT, user="postgres", dbname="postgres")
admin.autocommit = True
with admin.cursor() as cur:
    cur.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    cur.execute(f"CREATE DATABASE {DB}")
admin.close()

engine = create_engine(f"postgresql+psycopg2://postgres@{HOST}:{PORT}/{DB}")
with engine.begin() as conn:
    conn.execute(text("CREATE EXTENSION pg_invariants"))
    conn.execute(text("CREATE TABLE users (id int PRIMARY KEY, email text, deleted_at timestamptz)"))
    conn.execute(text("INSERT INTO users VALUES (1, 'ana@example.com'), (2, 'bo@example.com')"))
    conn.execute(text("SELECT invariants.enable_soft_delete('users')"))

Base = declarative_base()


class User(Base):
    __tablename__ = "users"
    id = Column(Integer, primary_key=True)
    email = Column(Text)
    deleted_at = Column(DateTime(timezone=True))


failures = []
with Session(engine) as session:
    user = session.get(User, 1)
    session.delete(user)
    session.commit()  # SQLAlchemy warns (here: raises) unless exactly 1 row was deleted

with engine.connect() as conn:
    row = conn.execute(text("SELECT deleted_at IS NOT NULL FROM users WHERE id = 1")).fetchone()
    if row is None or not row[0]:
        failures.append("the row is gone or not soft-deleted")
    result = conn.execute(text("DELETE FROM users WHERE id = 2"))
    if result.rowcount != 1:
        failures.append(f"Connection.execute(DELETE).rowcount = {result.rowcount}, expected 1")
    conn.commit()

for failure in failures:
    print(f"sqlalchemy: FAILED: {failure}")
print(f"sqlalchemy: {2 - len(failures)} passed, {len(failures)} failed")
sys.exit(1 if failures else 0)
