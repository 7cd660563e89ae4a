"""The scheduler: one active at a time (a lease in the database), owning orchestration
(run states, trigger rules, retries, timeouts, dead workers, limits) and handing ready
tries to an executor. ``rules`` holds the decisions, ``loop`` carries them out."""
