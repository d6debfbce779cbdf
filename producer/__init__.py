"""Submitting jobs and reading their results: the Python client and the CLI's producer commands."""

from pipeq.producer.client import Client, JobConflict, UnknownJob

from pipeq.core.contract import InvalidJob

__all__ = ["Client", "InvalidJob", "JobConflict", "UnknownJob"]
