"""Submitting jobs and reading their results: the Python client and the CLI's producer commands."""

from pipeq.core.contract import InvalidJob
from pipeq.producer.client import Client, JobConflict, UnknownJob

__all__ = ["Client", "InvalidJob", "JobConflict", "UnknownJob"]
