"""The server process: ``create_app`` composes the Execution API, the read API and the
web page with the one table of exception handlers; beside the requests it runs the
background pruner. ``background_server`` serves an app from a thread (the demo, tests)."""
