"""What producers and workers share: the job contract, job records, large results, object storage, the Celery
wiring and pipeq's Redis transport. It depends on :mod:`pipeq.config` alone."""
