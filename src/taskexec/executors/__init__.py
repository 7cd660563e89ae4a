"""Executors: run the queued task instances of a dag run on local processes or Celery."""
