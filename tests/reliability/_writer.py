"""A process that writes a registry and its usage ledger without end, and prints an
acknowledgement line after each write has committed: the R1 test kills it with SIGKILL.

`python _writer.py DATABASE WRITER`; each line is `KIND NAME` (model, tag, usage, bulk).
"""

from __future__ import annotations

import sys

from modelctl.registry import Registry
from modelctl.store.ledger import Ledger, Usage


def main(path: str, writer: str) -> None:
    registry = Registry.open(path)
    ledger = Ledger(registry.store, flush_interval=3600)  # flushed here, by hand
    out = sys.stdout
    for i in range(1_000_000):
        name = f"{writer}-{i}"
        step = i % 4
        if step == 0:
            registry.add(
                {"id": f"openai:{name}", "name": name, "backend": "openai",
                 "custom": {"i": i, "pad": "x" * (i % 700)}}
            )  # fmt: skip
            ack = f"model {name}"
        elif step == 1:
            registry.tag(f"openai:{writer}-{i - 1}", f"t{i}")
            ack = f"tag {writer}-{i - 1} t{i}"
        elif step == 2:
            ledger.record(Usage(model=name, latency=0.01 * i, tokens_in=i, tokens_out=i))
            ledger.flush()
            ack = f"usage {name}"
        else:  # one transaction of many records: all of them or none
            bulk = [
                {"id": f"openai:{name}-b{j}", "name": f"{name}-b{j}", "backend": "openai"}
                for j in range(40)
            ]
            registry.import_data({"models": bulk})
            ack = f"bulk {name}"
        out.write(ack + "\n")
        out.flush()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
