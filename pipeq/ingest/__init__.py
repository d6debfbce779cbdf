"""``pipeq ingest``: objects landing in object storage become jobs, by the rules in ``Settings.ingest``.

Sources, in any combination, each a module of its own: S3/MinIO bucket notifications read from a Redis list
(``redis_list``: MinIO's Redis target, "access" format), notifications POSTed to a small HTTP endpoint
(``http_endpoint``: MinIO's webhook target), and polling (``polling``: ``list_objects_v2``) for stores without
notifications. ``events`` reads notifications, ``rules`` turns objects into jobs, ``ingester`` submits them and
``cli`` runs the sources.

Exactly one job per object version: the job id is derived from bucket, key and ETag (else versionId, else the
event's sequencer), keyed with ``ingest_id_key`` so no one else can compute it, so a duplicate event, a poll
finding an object an event announced, or a restart submits an id that exists already, which enqueues nothing.
The first matching rule decides an object's task.
"""
