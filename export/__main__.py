"""`python -m export RUN_DIR --out BUNDLE_ROOT [--task K]`: a trained run → a new bundle version."""

from __future__ import annotations

import argparse
import sys

from train import UserError

from .bundle import export_bundle
from .variants import VARIANTS


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a training run's --output_dir")
    parser.add_argument("--out", default="bundles", help="bundle root; the version is written to OUT/<version>")
    parser.add_argument("--task", type=int, help="export after task K (1-based; default: the last completed)")
    parser.add_argument("--version", type=int, help="version number (default: the number of tasks learned)")
    parser.add_argument("--backbone-checkpoint", help="the frozen backbone's weights, if not where training found them")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated variants to try ({', '.join(VARIANTS)}; '' for none)")
    parser.add_argument("--parity-samples", type=int, default=2000, help="test images for parity and accuracy")
    parser.add_argument("--triton-repo", help="also write a Triton model repository here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    variants = tuple(v for v in args.variants.split(",") if v)
    unknown = set(variants) - set(VARIANTS)
    try:
        if unknown:
            raise UserError(f"unknown variant(s) {sorted(unknown)}; choose from {', '.join(VARIANTS)}.")
        if args.task is not None and args.task < 1:
            raise UserError(f"--task counts from 1 (got {args.task}).")
        folder = export_bundle(args.run_dir, args.out, None if args.task is None else args.task - 1, args.version,
                               args.backbone_checkpoint, variants, args.parity_samples)
        if args.triton_repo:
            from .triton import write_triton_repo

            write_triton_repo(folder, args.triton_repo)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
