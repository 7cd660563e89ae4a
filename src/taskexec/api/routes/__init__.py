"""One thin module per resource: parse input, call one service, return a schema."""
