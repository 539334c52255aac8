"""The ``videoseg-r1`` command line: one subcommand per job.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``;
this file only wires them up, so importing the CLI stays cheap (heavy modules load on use).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys

# name -> (module, one-line help). Modules are imported only when their subcommand runs
# (and for --help of that subcommand).
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("videoseg_r1.data.synthetic_cli",
              "generate the synthetic reasoning-VOS benchmark (ReVOS layout) and optional overlays"),
    "evaluate": ("videoseg_r1.eval.evaluate",
                 "score predicted masks on a benchmark (J, F, J&F, R) and write JSON + CSV"),
    "segment": ("videoseg_r1.segment_cli",
                "segment the objects a text query refers to in one video"),
    "predict": ("videoseg_r1.predict_cli",
                "run the pipeline on every expression of a benchmark (resumable, shardable)"),
    "train": ("videoseg_r1.training.cli", "train the reasoning model with GRPO or SFT"),
    "rate-difficulty": ("videoseg_r1.training.difficulty_cli",
                        "rate the difficulty D of training samples (MLLM rater or heuristic)"),
    "demo": ("videoseg_r1.demo", "run the whole pipeline on a synthetic or given video"),
}


class CLIError(Exception):
    """An error the user caused; printed as one line, exit code 2."""


def _available() -> dict[str, tuple[str, str]]:
    out = {}
    for name, (module, help_text) in SUBCOMMANDS.items():
        if importlib.util.find_spec(module) is not None:
            out[name] = (module, help_text)
    return out


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("videoseg-r1")
    except PackageNotFoundError:  # run from a checkout without installing
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="videoseg-r1",
        description="VideoSeg-R1: reasoning video object segmentation. "
        "Run `videoseg-r1 <command> --help` for the options of each command.",
    )
    parser.add_argument("--version", action="version", version=f"videoseg-r1 {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name, (module_name, help_text) in _available().items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        module = importlib.import_module(module_name)
        module.add_arguments(p)
        p.set_defaults(_module=module_name)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    module = importlib.import_module(args._module)
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (CLIError, FileNotFoundError, ValueError, RuntimeError, OSError) as exc:
        # User-facing errors end in one clear line, never a deep traceback
        # (set VIDEOSEG_R1_DEBUG=1 to see the traceback when reporting a bug).
        if os.environ.get("VIDEOSEG_R1_DEBUG"):
            raise
        print(f"videoseg-r1 {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
