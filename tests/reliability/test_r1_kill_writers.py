"""R1: processes writing one registry at once, killed with SIGKILL at random points.

Each trial starts three writers (`_writer.py`: models, tags, usage rows, and bulk imports of 40
records in one transaction) on the same database, waits for a random number of acknowledged
writes, and kills them all. After every trial the database must pass `PRAGMA integrity_check`,
hold every write a writer acknowledged, and hold each bulk import whole or not at all.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from modelctl.registry import Registry
from tests.reliability.conftest import scale

WRITER = Path(__file__).with_name("_writer.py")
REPO = Path(__file__).resolve().parents[2]


class Writers:
    """Three writer processes and the acknowledgements read from their output."""

    def __init__(self, database: Path, trial: int) -> None:
        self.acks: list[str] = []
        self.changed = threading.Condition()
        self.procs = [
            subprocess.Popen(
                [sys.executable, str(WRITER), str(database), f"w{trial}x{n}"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
            )
            for n in range(3)
        ]  # fmt: skip
        self.readers = [threading.Thread(target=self._read, args=(p,)) for p in self.procs]
        for reader in self.readers:
            reader.start()

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            with self.changed:
                self.acks.append(line.strip())
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    def wait_for(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        with self.changed:  # woken by each acknowledgement; a writer that exits is seen too
            while len(self.acks) < count and any(p.poll() is None for p in self.procs):
                left = deadline - time.monotonic()
                assert left > 0, f"the writers acknowledged {len(self.acks)} writes in {timeout} s"
                self.changed.wait(min(left, 0.5))
        failed = [p.stderr.read() for p in self.procs if p.poll() not in (None, -signal.SIGKILL)]
        assert not failed, f"a writer failed on its own: {failed[0][-2000:]}"

    def kill(self) -> list[str]:
        for proc in random.sample(self.procs, len(self.procs)):
            proc.send_signal(signal.SIGKILL)
        for proc in self.procs:
            proc.wait(timeout=30)
        for reader in self.readers:
            reader.join(timeout=30)
        for proc in self.procs:
            proc.stdout.close()
            proc.stderr.close()
        with self.changed:
            return list(self.acks)


def check(database: Path, acks: list[str]) -> tuple[bool, int, int]:
    """(corrupt, lost acknowledged writes, broken bulk imports)."""
    db = sqlite3.connect(database)
    try:
        if db.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
            return True, 0, 0
    finally:
        db.close()
    registry = Registry.open(database)
    lost = 0
    try:
        ids = set(registry.store.ids())
        usage = {m for (m,) in registry.store.db.execute("SELECT model FROM usage")}
        for ack in acks:
            kind, name, *rest = ack.split()
            if kind == "model":
                lost += f"openai:{name}" not in ids
            elif kind == "tag":
                lost += rest[0] not in registry.lookup(f"openai:{name}").tags
            elif kind == "usage":
                lost += name not in usage
            elif kind == "bulk":
                lost += sum(f"openai:{name}-b{j}" not in ids for j in range(40))
        prefixes = {i.rsplit("-b", 1)[0] for i in ids if "-b" in i}
        broken = sum(len({f"{p}-b{j}" for j in range(40)} & ids) not in (0, 40) for p in prefixes)
    finally:
        registry.close()
    return False, lost, broken


def test_killed_writers_never_corrupt_the_registry_or_lose_an_acknowledged_write(
    tmp_path: Path, figures
) -> None:
    database = tmp_path / "registry.sqlite"
    Registry.open(database).close()  # created and migrated before the writers race
    trials = scale(25, 100)
    rng = random.Random(20261203)
    started = time.monotonic()
    acknowledged = corrupt = lost = broken = 0
    for trial in range(trials):
        writers = Writers(database, trial)
        writers.wait_for(rng.randint(1, 60))
        acks = writers.kill()
        trial_corrupt, trial_lost, trial_broken = check(database, acks)
        if trial_corrupt:
            corrupt += 1
            for leftover in tmp_path.glob("registry.sqlite*"):  # the next trials start again
                leftover.unlink()
            Registry.open(database).close()
        acknowledged += len(acks)
        lost += trial_lost
        broken += trial_broken
    figures(
        "R1 kill -9 of registry writers",
        trials=trials, writers_killed=3 * trials, acknowledged_writes=acknowledged,
        corrupt_databases=corrupt, lost_writes=lost, broken_bulk_imports=broken,
        seconds=round(time.monotonic() - started, 1),
    )  # fmt: skip
    assert (corrupt, lost, broken) == (0, 0, 0)
