"""How a long-running pipeq command waits for its end: SIGTERM (a service manager, Kubernetes) or Ctrl-C."""

import signal
import threading


def run_until_stopped(stop: threading.Event) -> None:
    """Block until SIGTERM or Ctrl-C arrives, or ``stop`` is set by someone else; ``stop`` is set on return, and
    SIGTERM's previous handler is back. Call it from the main thread."""
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop.set()
