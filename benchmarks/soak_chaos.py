"""The soak's chaos loop: every few seconds one fault, chosen by a seeded random generator, each a function that
breaks a service, mends it, and says when it did which."""

import random
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from benchmarks.soak_measure import Fault
from benchmarks.soak_services import PersistentRedis, RestartableS3, WorkerPool
from tests.support.receiver import Receiver

Action = Callable[[], dict[str, Any]]
"""Injects one fault and mends it; returns details for the report (the loop times it)."""


class ChaosLoop:
    """Runs in a thread: every ``every_s`` seconds (from one fault's start to the next) one of ``actions``."""

    def __init__(self, actions: dict[str, Action], every_s: float, rng: random.Random) -> None:
        self.actions, self.every_s, self.rng = actions, every_s, rng
        self.faults: list[Fault] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop after the fault in hand is mended."""
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        next_at = time.monotonic() + self.every_s
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            next_at += self.every_s
            kind = self.rng.choice(sorted(self.actions))
            began = time.time()
            try:
                detail = self.actions[kind]()
            except Exception:
                self.errors.append(f"{kind}: {traceback.format_exc(limit=3)}")
                print(f"  chaos: {kind} failed: {traceback.format_exc(limit=3)}", flush=True)
                continue
            self.faults.append(Fault(kind, began, time.time(), detail))


def kill_worker(pool: WorkerPool, rng: random.Random) -> Action:
    """kill -9 a random worker; its replacement starts at once."""
    return lambda: {"pid": pool.kill_random(rng)}


def restart_redis(server: PersistentRedis) -> Action:
    """kill -9 redis-server and start it again on the same port, its append-only file replayed."""

    def restart() -> dict[str, Any]:
        server.kill()
        server.start()
        return {}

    return restart


def stop_s3(server: RestartableS3, outage_s: float, check: Callable[[], int]) -> Action:
    """Stop the S3 server for ``outage_s`` and start it again on the same port; ``check`` counts the uploaded
    objects missing afterwards (moto keeps them in this process's memory: there should be none)."""

    def outage() -> dict[str, Any]:
        server.stop()
        time.sleep(outage_s)
        server.start()
        return {"objects_missing": check()}

    return outage


def flap_receiver(receiver: Receiver, outage_s: float) -> Action:
    """Stop the webhook receiver (connections refused) for ``outage_s``, then listen again on the same port."""

    def flap() -> dict[str, Any]:
        receiver.stop()
        time.sleep(outage_s)
        receiver.start()
        return {}

    return flap


def fail_over(group: Any) -> Action:
    """Fail a Sentinel group's primary over to a replica (devtools.local_services.sentinel_group)."""

    def failover() -> dict[str, Any]:
        group.fail_over()
        return {}

    return failover
