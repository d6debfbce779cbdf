"""Submitting jobs and reading their results: the Python client and the CLI's producer commands."""

from pipeq.contract import InvalidJob
from producer.client import Client, UnknownJob

__all__ = ["Client", "InvalidJob", "UnknownJob"]
