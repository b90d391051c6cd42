"""Bit-identity across code versions or implementations: every step's loss as float32 bits and a
sha256 of the final parameters, per preset and backend (the protocol's work: seed 0, the
synthetic corpus, 15 steps). Run it under two versions and compare the two files.

    python dev/bitcheck.py run webgpu,webgpu-dawn tiny,small,medium,large out-new.json
    PYTHONPATH=old-checkout python dev/bitcheck.py run webgpu tiny,small out-old.json
    python dev/bitcheck.py compare out-old.json out-new.json     # exit 1 where they differ
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path


def run(backends: str, names: str, out: str) -> None:
    """Each preset's work made once, then trained on each backend in turn. Only the protocol's
    API (prepare, create_backend, train), which every version since the engines' move keeps."""
    import numpy as np

    from tinygpt_bench import presets, protocol
    from tinygpt_bench import corpus as corpus_mod

    import tinygpt_bench

    print(f"code: {Path(tinygpt_bench.__file__).parent}", flush=True)
    corpus = corpus_mod.load("synthetic")
    res: dict = {b: {} for b in backends.split(",")}
    for name in names.split(","):
        work = protocol.prepare(presets.load(name), corpus, protocol.DEFAULT_STEPS, protocol.DEFAULT_SEED)
        for backend in res:
            be = protocol.create_backend(backend, work.preset)
            try:
                steps = protocol.train(be, work)
                params = be.parameters()
            finally:
                be.close()
            res[backend][name] = {"loss_bits": [int(np.float32(s.loss).view(np.uint32)) for s in steps],
                                  "loss": [s.loss for s in steps],
                                  "params_sha256": hashlib.sha256(params.tobytes()).hexdigest()}
            print(f"{name:>8} {backend}: final loss {steps[-1].loss:.7f}, params "
                  f"{res[backend][name]['params_sha256'][:12]}", flush=True)
        del work
    with open(out, "w") as f:
        json.dump({"backends": res}, f, indent=1)


def compare(a_path: str, b_path: str) -> int:
    """Same backend against same backend; two files of one backend each, those two (an
    implementation against another). Exit 1 where anything differs or nothing is in common."""
    a, b = (json.load(open(p))["backends"] for p in (a_path, b_path))
    pairs = [(x, x) for x in a if x in b]
    if not pairs and len(a) == len(b) == 1:
        pairs = [(next(iter(a)), next(iter(b)))]
    if not pairs:
        print(f"no backend in common: {', '.join(a)} against {', '.join(b)}")
        return 1
    bad = 0
    for backend, other in pairs:
        for name in [n for n in a[backend] if n in b[other]]:
            x, y = a[backend][name], b[other][name]
            same_loss = x["loss_bits"] == y["loss_bits"]
            same_params = x["params_sha256"] == y["params_sha256"]
            worst = max(abs(p - q) / abs(q) for p, q in zip(x["loss"], y["loss"]))
            print(f"{name:>8} {backend if backend == other else backend + ' vs ' + other:>12}: losses {'identical' if same_loss else 'DIFFER'}, parameters "
                  f"{'identical' if same_params else 'DIFFER'}, largest loss difference {worst:.1e}")
            bad += not (same_loss and same_params)
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "run":
        run(*sys.argv[2:])
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        sys.exit(compare(*sys.argv[2:]))
    else:
        sys.exit(__doc__)
