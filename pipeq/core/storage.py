"""The boto3 S3 client every pipeq process builds from settings (endpoint, region, credentials), and the SQS
client ``pipeq ingest --sqs`` builds the same way."""

from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.config import Config

from pipeq.config.settings import Settings


def s3_client(settings: Settings, max_connections: int = 10, signature_version: str | None = None) -> Any:
    """An S3 client for ``settings``; credentials fall back to boto3's chain (AWS_* variables, profiles).
    ``signature_version="s3v4"`` for presigned URLs that sign their headers (content type and length)."""
    secret = settings.s3_secret_access_key
    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.s3_region,
        aws_access_key_id=settings.s3_access_key_id,
        aws_secret_access_key=secret.get_secret_value() if secret else None,
        config=Config(
            max_pool_connections=max_connections,
            retries={"max_attempts": 3, "mode": "standard"},
            s3={"addressing_style": "path"},
            signature_version=signature_version,
        ),
    )


def sqs_client(settings: Settings, max_connections: int = 10) -> Any:
    """An SQS client for ``settings``, with the S3 client's region and credentials. Its endpoint is
    ``s3_endpoint_url`` (an S3-compatible server that also serves SQS, such as moto's), except an AWS one
    (``*.amazonaws.com``), or none: then boto3 picks the SQS endpoint of ``s3_region``, which must be the queue's."""
    secret = settings.s3_secret_access_key
    endpoint = settings.s3_endpoint_url
    if endpoint and (urlsplit(endpoint).hostname or "").endswith((".amazonaws.com", ".amazonaws.com.cn")):
        endpoint = None
    return boto3.client(
        "sqs",
        endpoint_url=endpoint,
        region_name=settings.s3_region,
        aws_access_key_id=settings.s3_access_key_id,
        aws_secret_access_key=secret.get_secret_value() if secret else None,
        config=Config(max_pool_connections=max_connections, retries={"max_attempts": 3, "mode": "standard"}),
    )
