"""Queries and rules, one module per resource. Every function takes the transaction's
connection first (``fn(conn, *, ...)``) and runs inside it: services never commit,
never open connections and never read global settings. ``db.engine.Database`` owns
the transaction: every entry point calls services through ``Database.write`` or
``Database.read``. Each state change has exactly one owner here."""
