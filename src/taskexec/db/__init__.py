"""Database layer: engine, models, the upsert builder and error classification."""
