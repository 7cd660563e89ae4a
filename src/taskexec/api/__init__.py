"""The HTTP layer: app factory, dependencies, middleware and thin routes."""
