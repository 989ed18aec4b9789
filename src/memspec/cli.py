"""The command line: `memspec compile SPEC ...`.

This is the only place that turns errors into exit codes: a `MemspecError` (a problem
with the user's input) prints its located diagnostic and exits 2; anything else is a
bug in memspec and exits 1.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from memspec.errors import MemspecError

__all__ = ["main"]

FORMATS = ("md", "tex", "json")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="memspec",
        description="Compile a model spec into an exact, derivable training-memory report.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compile", help="compile a spec into a memory report")
    c.add_argument("spec", help="the .mspec file")
    c.add_argument("--format", choices=FORMATS, default="md", help="report format (md)")
    c.add_argument(
        "--set",
        dest="bindings",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="bind a symbol (B or batch_size) to an integer; repeatable",
    )
    c.add_argument("--preset", help="bind the symbols of one of the spec's presets")
    c.add_argument("--convention", help="activation convention (course, autograd, ...)")
    c.add_argument("--optimizer", help="optimizer policy (adamw, adam, sgd, sgd_momentum, ...)")
    c.add_argument("--precision", help="precision policy (fp32, mixed_bf16, bf16, ...)")
    c.add_argument(
        "--use",
        action="append",
        default=[],
        metavar="VARIANT",
        help="pick an implementation variant (math, flash); repeatable",
    )
    c.add_argument("-o", "--output", help="write the report here instead of stdout")
    return parser


def _compile(args: argparse.Namespace) -> str:
    from memspec.compile import compile_spec

    result = compile_spec(
        Path(args.spec),
        set=args.bindings,
        preset=args.preset,
        convention=args.convention,
        optimizer=args.optimizer,
        precision=args.precision,
        use=tuple(args.use),
    )
    if args.format == "json":
        return result.to_json()
    if args.format == "tex":
        return result.to_latex()
    return result.to_markdown()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        output = _compile(args)
        if args.output:
            Path(args.output).write_text(output, encoding="utf-8")
        else:
            sys.stdout.write(output)
    except MemspecError as err:
        print(err.render(), file=sys.stderr)
        return 2
    except RecursionError:
        print(f"{args.spec}: error: input nested too deeply to process", file=sys.stderr)
        return 2
    except Exception:
        print(
            "memspec: internal error (a bug in memspec; please report it with the spec):",
            file=sys.stderr,
        )
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
