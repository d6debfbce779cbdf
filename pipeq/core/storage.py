"""The boto3 S3 client every pipeq process builds from settings (endpoint, region, credentials)."""

from typing import Any

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
