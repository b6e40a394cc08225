"""The ``arbor`` command: ``arbor <command> CONFIG [key=value ...]``.

arbor train configs/countdown_tiny.yaml             # SFT warm start, then actor-learner RL on Ray (the main job)
arbor submit configs/countdown_tiny.yaml --address http://HEAD:8265   # the same as a Ray job on a cluster
arbor sft  configs/countdown_tiny.yaml              # SFT warm start + before/after evaluation
arbor value configs/countdown_tiny.yaml model.path=runs/sft-.../checkpoints/sft   # OVM value head
arbor prm configs/countdown_tiny.yaml model.path=runs/sft-.../checkpoints/sft     # process reward model
arbor eval configs/countdown_tiny.yaml model.path=runs/value-.../checkpoints/value search.budgets=[1,4,16]
arbor convert MODEL.gguf OUT_DIR                    # a GGUF file as a plain Hugging Face directory (safetensors)
"""

from __future__ import annotations

import argparse
import sys

COMMANDS = {
    "sft": "SFT warm start on solver traces, then a before/after held-out evaluation",
    "value": "fit the value head of model.path on its own verified samples (OVM), report calibration and AUC",
    "prm": "train a process reward model on Math-Shepherd labels or sibling pairs from search trees",
    "train": "distributed actor-learner RL on Ray: tree-search rollouts, replay buffer, DeepSpeed actor-critic",
    "submit": "send `arbor train` to a Ray cluster with `ray job submit` (--address http://HEAD:8265)",
    "eval": "held-out accuracy of model.path; with search.budgets, test-time scaling of greedy/best-of-N/beam/MCTS",
}


CONVERT = "convert a GGUF file into a Hugging Face directory (safetensors), as model.path=FILE.gguf does once"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="arbor", description="Arbor: actor-learner RL with tree search over steps.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    convert = sub.add_parser("convert", help=CONVERT, description=CONVERT)
    convert.add_argument("gguf", help="the GGUF file, e.g. SmolLM2-135M-Instruct.Q4_1.gguf")
    convert.add_argument("out_dir", help="the directory to write (replaced if it exists)")
    for name, help_text in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        cmd.add_argument("config", help="YAML recipe, e.g. configs/countdown_tiny.yaml")
        cmd.add_argument("overrides", nargs="*", help="dotted overrides, e.g. sft.steps=100 model.path=DIR")
        if name == "submit":
            cmd.add_argument("--address", required=True, help="Ray dashboard address, e.g. http://HEAD:8265")
            cmd.add_argument("--no-wait", action="store_true", help="return once the job is submitted")
            cmd.add_argument(
                "--pip", action="append", default=None, metavar="PKG", help="a package the job installs (repeatable)"
            )
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, with dotted overrides taken from anywhere on it."""
    parser = _parser()
    # Overrides may follow the options too (`arbor submit CONFIG --address URL model.path=DIR`): argparse
    # stops a positional list at the first option, so what it leaves over is taken as more overrides.
    args, extra = parser.parse_known_args(argv)
    stray = [a for a in extra if a.startswith("-") or "=" not in a]
    if stray or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit status."""
    args = parse_args(argv)
    # Heavy imports wait until the arguments parse, so `arbor --help` answers at once.
    from arbor.core.config import load_config
    from arbor.core.errors import ArborError, Interrupted, RunFailed

    try:
        if args.command == "convert":
            from arbor.core.gguf import convert

            print(f"wrote {convert(args.gguf, args.out_dir)}")
            return 0
        if args.command == "submit":
            from arbor.launch.submit import run_submit

            return run_submit(args.config, args.overrides, args.address, wait=not args.no_wait, pip=args.pip)
        cfg = load_config(args.config, args.overrides)
        if args.command == "train":
            from arbor.launch.train import run_train

            run_train(cfg)
            return 0
        if args.command == "prm":
            from arbor.launch.prm import run_prm

            run_prm(cfg)
            return 0
        from arbor.launch import commands

        run = {"sft": commands.run_sft, "value": commands.run_value, "eval": commands.run_eval}[args.command]
        run(cfg)
    except ArborError as exc:
        print(f"arbor {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Interrupted as exc:  # Ctrl-C in the RL loop: the step in flight finished and was checkpointed
        print(f"arbor {args.command}: {exc}", file=sys.stderr)
        return 130
    except RunFailed as exc:  # a learner rank or every rollout actor died: what died, and how to resume
        print(f"arbor {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # elsewhere (SFT, an evaluation): the processes are closed on the way out
        print(f"arbor {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
