"""Executors: run the queued tries of a dag run on local processes or Celery workers.

Each executor has two sides. The executor side (``base``, ``local``, ``celery``) runs
in the process that drives the run: it reads the run's queued tries and ends the tries
it gives up on through ``Database`` and ``services.task_instances``, like every other
entry point. The worker side (``worker``, ``celery_app``) runs inside worker processes:
it loads the dags and runs one try through the SDK's runner, talking only to the
Execution API; it imports no server code (``make lint`` checks it).
"""
