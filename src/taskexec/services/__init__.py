"""Queries and rules, one module per resource. Functions take a keyword-only ``conn``;
they never commit and never open connections: the caller owns the transaction."""
