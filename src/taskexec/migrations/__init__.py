"""Alembic migrations (``script_location = taskexec:migrations``)."""
