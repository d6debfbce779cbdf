"""Operating pipeq: Prometheus metrics, the health endpoint, the backlog of every queue."""
