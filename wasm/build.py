"""Rebuild the wasm module(s) from wasm/src/*.c with ziglang from PyPI (no system toolchain).

    python wasm/build.py            # writes wasm/tinygpt.wasm
    python wasm/build.py --check    # rebuild into a temp dir, fail if it differs from the shipped file
    python wasm/build.py --define SPIN_ITERS=2000000 --out .variant/spin2m
                                    # a variant for an A/B (dev/ab_module.py), never into wasm/

One module: every source is compiled with SIMD128; matmul.c is compiled five more
times (AGAIN below): with relaxed SIMD (-mrelaxed-simd -DTG_RELAXED) so the engine can
choose the FMA matmul at run time (model_set_fma), and with -DTG_SPLAT / -DTG_BCAST (how
the 4x8 tile broadcasts A values: splat loads, or packing A pre-broadcast), plain and
relaxed, chosen at run time with model_set_matmul_kernel; bench.c a second time with
relaxed SIMD (bench_peak_fma). The module therefore needs an engine with relaxed SIMD
(wasmtime has it).

The build is deterministic: fixed flags, sources in sorted order, no timestamps or paths
in the output (the module carries no debug info or producers section).
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE / "src"
MAX_MEMORY = 16 << 30  # 16 GiB: the Memory64 ceiling break needs more than 4 GiB
INITIAL_MEMORY = 2 << 20  # grown on demand by the module's allocator
MAIN_STACK = 1 << 20  # the calling thread's stack; workers get theirs from the heap

CFLAGS = ["-target", "wasm64-freestanding", "-O3", "-msimd128", "-matomics", "-mbulk-memory",
          "-fno-builtin", "-ffreestanding", "-nostdlib", "-Wall", "-Wextra", "-Wno-unused-parameter"]
LDFLAGS = ["-mwasm64", "--no-entry", "--import-memory", "--shared-memory",
           f"--max-memory={MAX_MEMORY}", f"--initial-memory={INITIAL_MEMORY}",
           "--export=__stack_pointer", "--export=__heap_base", "-z", f"stack-size={MAIN_STACK}",
           "--strip-all", "--no-gc-sections"]
MODULE = "tinygpt.wasm"
RELAXED = ["-mrelaxed-simd", "-DTG_RELAXED"]
AGAIN = [  # (source, object suffix, extra flags): further compiles of one source, linked in this order
    ("matmul.c", "_relaxed", RELAXED),  # relaxed-SIMD FMA matmul (model_set_fma)
    ("bench.c", "_relaxed", RELAXED),  # bench_peak_fma
    ("matmul.c", "_splat", ["-DTG_SPLAT"]),  # splat-load 4x8 tile (model_set_matmul_kernel 1)
    ("matmul.c", "_relaxed_splat", [*RELAXED, "-DTG_SPLAT"]),
    ("matmul.c", "_bcast", ["-DTG_BCAST"]),  # A packed pre-broadcast (model_set_matmul_kernel 2)
    ("matmul.c", "_relaxed_bcast", [*RELAXED, "-DTG_BCAST"]),
]


def zig(*args: str) -> None:
    cmd = [sys.executable, "-m", "ziglang", *args]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"build failed: {' '.join(cmd)}\n{r.stdout}{r.stderr}")
    if r.stderr.strip():
        print(r.stderr.strip(), file=sys.stderr)


def build(out_dir: Path, defines: list[str] = ()) -> dict[str, Path]:
    """The module built into out_dir; `defines` (NAME=VALUE) are passed to every compile as -D:
    a variant of a tunable the sources guard with #ifndef (SPIN_ITERS in pool.c)."""
    units = [(src, src.stem, []) for src in sorted(SRC.glob("*.c"))]
    units += [(SRC / name, Path(name).stem + suffix, extra) for name, suffix, extra in AGAIN]
    with tempfile.TemporaryDirectory() as tmp:
        objs = []
        for src, stem, extra in units:
            obj = Path(tmp) / f"{stem}.o"
            zig("cc", *CFLAGS, *extra, *(f"-D{d}" for d in defines), "-c", str(src), "-o", str(obj))
            objs.append(str(obj))
        dest = out_dir / MODULE
        zig("wasm-ld", *LDFLAGS, *objs, "-o", str(dest))
    return {MODULE: dest}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="fail if a rebuild differs from the shipped module")
    ap.add_argument("--define", action="append", default=[], metavar="NAME=VALUE",
                    help="a variant: -DNAME=VALUE for every compile (needs --out)")
    ap.add_argument("--out", type=Path, help="write the module into this folder instead of wasm/ (for variants)")
    args = ap.parse_args()
    if args.define and (args.check or args.out is None or args.out.resolve() == HERE):
        ap.error("--define builds a variant: give --out with a folder other than wasm/, and no --check")
    bad = [d for d in args.define if "=" not in d or not d.split("=", 1)[0].isidentifier() or not d.split("=", 1)[1]]
    if bad:
        ap.error(f"--define {bad[0]}: give NAME=VALUE")
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            built = build(Path(tmp))
            bad = [n for n, p in built.items() if p.read_bytes() != (HERE / n).read_bytes()]
            for n, p in built.items():
                print(f"{n}: {hashlib.sha256(p.read_bytes()).hexdigest()[:16]} {'DIFFERS' if n in bad else 'same'}")
            return 1 if bad else 0
    out = args.out or HERE
    out.mkdir(parents=True, exist_ok=True)
    for n, p in build(out, args.define).items():
        print(f"{p}: {p.stat().st_size} bytes, sha256 {hashlib.sha256(p.read_bytes()).hexdigest()[:16]}"
              + (f" ({' '.join(args.define)})" if args.define else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
