"""The JSON APIs: the Execution API for workers (``/execution``), the read API for
people and tools (``/api/v1``), and what their routes share: request dependencies
(the transaction owner, auth) and middleware. ``server.app`` composes them."""
