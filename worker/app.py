"""The worker's Celery app: ``celery -A pipeq.worker.app worker -Q <queue>`` runs it as Celery users expect.

Settings come from ``PIPEQ_*`` variables and the ``PIPEQ_CONFIG`` file. ``pipeq worker --device ...`` adds
device pinning on top of this same app.
"""

from celery import Celery, Task

from pipeq.config.settings import Settings, load_settings
from pipeq.core.messaging import TASK_NAME, make_celery
from pipeq.webhooks import delivery as webhooks
from pipeq.worker.consumer import EngineStep
from pipeq.worker.ocr import install_ocr_timeout


def create_app(settings: Settings) -> Celery:
    """A worker app for ``settings``: the ``pipeq.infer`` task, micro-batched by the engine."""
    app = make_celery(settings)
    app.pipeq_settings = settings
    install_ocr_timeout(settings.limits.ocr_timeout_s)
    app.steps["consumer"].add(EngineStep)

    @app.task(name=TASK_NAME, bind=True, Strategy="pipeq.worker.consumer:batching_strategy", shared=False)
    def infer(self: Task, job: dict) -> None:
        """Never called by a worker: pipeq's Strategy hands jobs to the micro-batching engine instead."""
        raise RuntimeError("pipeq.infer runs inside a pipeq worker's micro-batching engine, not eagerly")

    webhooks.register(app)
    return app


app = create_app(load_settings())
