"""``python -m pipeq.cli``: the ``pipeq`` command."""

import sys

from pipeq.cli.main import main

sys.exit(main())
