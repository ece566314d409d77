"""python -m tools.make_tiny_model OUT_DIR [--preset tiny|marker|full] [--seed N] [--cached]"""
from __future__ import annotations

import argparse
import sys
import time

from tools import make_tiny_model
from tools.make_tiny_model import PRESETS, build_checkpoint, cached_checkpoint, preload_openblas


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.make_tiny_model",
                                 description=make_tiny_model.__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cached", action="store_true",
                    help="treat OUT_DIR as a cache root: reuse the checkpoint there, build it only when missing; "
                         "prints only its path on stdout")
    args = ap.parse_args(argv)
    preload_openblas()
    t0 = time.perf_counter()
    if args.cached:
        log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
        out = cached_checkpoint(args.out_dir, preset=args.preset, seed=args.seed, log=log)
        print(out.resolve())
        return 0
    log = (lambda message: print(message, flush=True)) if "train" in PRESETS[args.preset] else None
    out = build_checkpoint(args.out_dir, preset=args.preset, seed=args.seed, log=log)
    dt = time.perf_counter() - t0
    print(f"{out.resolve()}  preset={args.preset} seed={args.seed}  built in {dt:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
