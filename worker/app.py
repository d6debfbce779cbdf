"""The worker's Celery app: ``celery -A worker.app worker -Q <queue>`` runs it as Celery users expect.

Settings come from ``PIPEQ_*`` variables and the ``PIPEQ_CONFIG`` file. ``pipeq worker --device ...`` adds
device pinning on top of this same app.
"""

from celery import Task

from config.settings import load_settings
from pipeq.messaging import TASK_NAME, make_celery
from worker.consumer import EngineStep

settings = load_settings()
app = make_celery(settings)
app.pipeq_settings = settings
app.steps["consumer"].add(EngineStep)


@app.task(name=TASK_NAME, bind=True, Strategy="worker.consumer:batching_strategy")
def infer(self: Task, job: dict) -> None:
    """Jobs are run by the micro-batching engine, not one by one; this body is never called by a worker."""
    raise RuntimeError("pipeq.infer runs inside a pipeq worker's micro-batching engine, not eagerly")
