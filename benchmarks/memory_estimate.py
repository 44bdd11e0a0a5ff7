"""Memory estimate benchmark: modelctl's estimate beside the memory llama.cpp really takes.

    python benchmarks/memory_estimate.py    # needs llama-cpp-python (make bench installs it)

For GGUF models from about 30 MB to about 1 GB (generated here with the `gguf` writer), each
loaded by llama.cpp in a fresh process at several context lengths: the whole context is
evaluated, so that every buffer (weights, KV cache, compute) is resident, and the resident
memory increase is compared with `fit.estimate_memory` on the file's own metadata.
Target: within 10% or 100 MiB, whichever is larger, on every row.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from modelctl.fit.estimate import estimate_memory
from modelctl.fit.gguf_meta import read_gguf
from modelctl.ops.demo import TinySpec, write_llama

MiB = 2**20

# layers x width, shape, contexts to load it at
MODELS = [
    ("4 x 512", TinySpec(layers=4, embedding=512, heads=8, kv_heads=2, feed_forward=1408,
                       extra_vocab=8000, dtype="F16", context_length=16384), (512, 4096, 16384)),
    ("8 x 1024", TinySpec(layers=8, embedding=1024, heads=16, kv_heads=4, feed_forward=2816,
                        extra_vocab=32000, dtype="F16", context_length=8192), (512, 2048, 8192)),
    ("10 x 1536", TinySpec(layers=10, embedding=1536, heads=12, kv_heads=4, feed_forward=4096,
                        extra_vocab=32000, dtype="Q8_0", context_length=4096), (512, 4096)),
    ("8 x 2048", TinySpec(layers=8, embedding=2048, heads=16, kv_heads=8, feed_forward=5632,
                      extra_vocab=32000, dtype="F16", context_length=4096), (512, 2048)),
]  # fmt: skip

# Runs in a fresh interpreter: the increase of resident memory from just before the load to
# just after the whole context has been evaluated (every page of every buffer touched).
PROBE = """
import json, sys, time, psutil, random
import llama_cpp
path, n_ctx = sys.argv[1], int(sys.argv[2])
proc = psutil.Process()
before = proc.memory_info().rss
model = llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_threads=2, verbose=False)
rng = random.Random(0)
tokens = [rng.randrange(3, 259) for _ in range(n_ctx - 1)]
start = time.perf_counter()
for i in range(0, len(tokens), 512):
    model.eval(tokens[i:i + 512])
print(json.dumps({"rss": proc.memory_info().rss - before, "seconds": time.perf_counter() - start}))
"""


def measure(path: Path, context: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(path), str(context)],
        capture_output=True, text=True, check=True, timeout=1800,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the two smallest models")
    args = parser.parse_args()
    models = MODELS[:2] if args.quick else MODELS
    folder = Path(tempfile.mkdtemp(prefix="modelctl-mem-"))
    print(f"# memory estimate vs llama.cpp (llama-cpp-python), python {sys.version.split()[0]}")
    print("| model | file | context | measured RSS increase | estimate | error | within target |")
    print("|---|---|---|---|---|---|---|")
    worst = 0.0
    try:
        for label, spec, contexts in models:
            path = write_llama(folder / f"{label.replace(' ', '')}-{spec.dtype}.gguf", spec)
            info = read_gguf(path)
            for context in contexts:
                measured = measure(path, context)["rss"]
                estimate = estimate_memory(info, context=context).total
                error = (estimate - measured) / measured
                ok = abs(estimate - measured) <= max(0.10 * measured, 100 * MiB)
                worst = max(worst, abs(error))
                print(
                    f"| {label} {spec.dtype} | {info.file_size / MiB:,.0f} MiB | {context:,} "
                    f"| {measured / MiB:,.0f} MiB | {estimate / MiB:,.0f} MiB | {error:+.1%} "
                    f"| {'yes' if ok else 'NO'} |",
                    flush=True,
                )
            path.unlink()
    finally:
        for leftover in folder.glob("*"):
            leftover.unlink()
        folder.rmdir()
    print(f"\nlargest relative error: {worst:.1%}")


if __name__ == "__main__":
    main()
