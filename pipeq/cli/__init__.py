"""The ``pipeq`` command line, on top of every other package."""

from pipeq.cli.main import main

__all__ = ["main"]
