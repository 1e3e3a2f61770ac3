"""Migrations as shipped: both dialects in step, and the SQLite statement splitter."""

from __future__ import annotations

from ghostllm.store import load_migrations
from ghostllm.store.sqlite import statements


def test_both_dialects_have_the_same_migrations() -> None:
    pg, lite = load_migrations("postgresql"), load_migrations("sqlite")
    assert pg and [(m.version, m.name) for m in pg] == [(m.version, m.name) for m in lite]
    assert pg[0].version == 1 and pg[0].checksum != lite[0].checksum


def test_statements_split_on_semicolons_outside_strings_and_comments() -> None:
    script = "-- a; comment\nCREATE TABLE t (x TEXT DEFAULT ';');\n\nINSERT INTO t VALUES ('a;b'); SELECT 1\n"
    assert list(statements(script)) == [
        "-- a; comment\nCREATE TABLE t (x TEXT DEFAULT ';');",
        "INSERT INTO t VALUES ('a;b');",
        "SELECT 1",
    ]
