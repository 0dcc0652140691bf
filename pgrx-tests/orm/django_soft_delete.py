"""Django against soft-delete tables, on the cluster that preloads
pg_invariants and on the one that does not (PGI_HOST, PGI_PRELOAD_PORT,
PGI_PORT):

- Model.delete() reports one row deleted when preloaded (0 without), and
  the row stays in the table, soft-deleted;
- a stale save (the row loaded, deleted by another session, then edited
  and saved): Django's UPDATE of every column matches no row, so save()
  goes on to INSERT and fails on the key, and save(force_update=True)
  raises "did not affect any rows"; the row stays deleted, in both modes.
"""
import os
import sys

import django
import psycopg2
from django.conf import settings

HOST = os.environ.get("PGI_HOST", "127.0.0.1")
MODES = [
    ("preload", int(os.environ.get("PGI_PRELOAD_PORT", "28919"))),
    ("trigger", int(os.environ.get("PGI_PORT", "28916"))),
]
DB = "pgi_orm_django"

settings.configure(
    DATABASES={
        mode: {"ENGINE": "django.db.backends.postgresql", "HOST": HOST, "PORT": port, "USER": "postgres", "NAME": DB}
        for mode, port in MODES
    }
    | {"default": {"ENGINE": "django.db.backends.postgresql", "HOST": HOST, "PORT": MODES[0][1],
                   "USER": "postgres", "NAME": DB}},
    INSTALLED_APPS=[],
    USE_TZ=True,
)
django.setup()

from django.db import DatabaseError, IntegrityError, models, transaction  # noqa: E402


class User(models.Model):
    email = models.TextField()
    deleted_at = models.DateTimeField(null=True)

    class Meta:
        app_label = "pgi"
        db_table = "users"
        managed = False


def fresh_database(port):
    admin = psycopg2.connect(host=HOST, port=port, user="postgres", dbname="postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        cur.execute(f"CREATE DATABASE {DB}")
    admin.close()
    conn = psycopg2.connect(host=HOST, port=port, user="postgres", dbname=DB)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("CREATE EXTENSION pg_invariants")
        cur.execute("CREATE TABLE users (id serial PRIMARY KEY, email text, deleted_at timestamptz)")
        cur.execute("INSERT INTO users (email) VALUES ('ana@example.com'), ('bo@example.com')")
        cur.execute("SELECT invariants.enable_soft_delete('users')")
    return conn


def deleted(conn, user_id):
    with conn.cursor() as cur:
        cur.execute("SELECT deleted_at IS NOT NULL FROM users WHERE id = %s", (user_id,))
        row = cur.fetchone()
    return row is not None and row[0]


checks = 0
failures = []
for mode, port in MODES:
    other = fresh_database(port)

    checks += 1
    count, _ = User.objects.using(mode).get(pk=1).delete()
    expected = 1 if mode == "preload" else 0
    if count != expected:
        failures.append(f"{mode}: Model.delete() reported {count} rows, expected {expected}")
    if not deleted(other, 1):
        failures.append(f"{mode}: the row is gone or not soft-deleted")

    checks += 1
    user = User.objects.using(mode).get(pk=2)
    with other.cursor() as cur:
        cur.execute("DELETE FROM users WHERE id = 2")
    user.email = "edited@example.com"
    try:
        with transaction.atomic(using=mode):
            user.save(using=mode)
        failures.append(f"{mode}: the stale save committed")
    except IntegrityError:
        pass
    try:
        with transaction.atomic(using=mode):
            user.save(using=mode, force_update=True)
        failures.append(f"{mode}: the forced stale save committed")
    except DatabaseError as error:
        if "did not affect any rows" not in str(error):
            failures.append(f"{mode}: the forced stale save raised {error}")
    if not deleted(other, 2):
        failures.append(f"{mode}: the stale save brought the row back")
    other.close()
    django.db.connections[mode].close()

for failure in failures:
    print(f"django: FAILED: {failure}")
print(f"django: {checks - len(failures)} passed, {len(failures)} failed")
sys.exit(1 if failures else 0)
