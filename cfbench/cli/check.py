"""The ``check`` verb: the preflight of a run (:mod:`cfbench.evaluation.preflight`), one line per item.

``run``, ``generate`` and ``eval`` call :func:`preflight_or_stop` first, so a blocker stops them before any
long work. Light to import: the dataset is read and torch asked only when the items are checked."""

from __future__ import annotations

import sys
from pathlib import Path

from cfbench.evaluation.preflight import PreflightRequest, blockers, preflight, require_preflight


def _data_dir_or_none(args) -> Path | None:
    from cfbench.cli.run import _data_dir
    from cfbench.cli.common import CliError

    try:
        return _data_dir(args)
    except CliError:
        return None


def request_from_args(args, generate: bool = True, evaluate: bool = True) -> PreflightRequest:
    """The preflight request of a ``run`` / ``generate`` / ``check`` command line."""
    from cfbench.cli.run import apply_benchmark_settings, run_folder

    apply_benchmark_settings(args)

    return PreflightRequest(
        model=args.model, split=args.split, data_dir=_data_dir_or_none(args), model_path=args.model_path,
        out=run_folder(args), resolution=args.resolution, limit=args.limit,
        evaluator=getattr(args, "evaluator", "auto"), device=args.device, generate=generate, evaluate=evaluate,
        clip_model=getattr(args, "clip_model", None), strict=args.strict)


def eval_request(args) -> PreflightRequest:
    """The preflight request of ``cfbench eval --run DIR``: the split and data folder the manifest records."""
    from cfbench.runs.manifest import RunManifest

    manifest = RunManifest.read(Path(args.run))
    data_dir = args.eval_data or manifest.data_dir
    return PreflightRequest(
        model=None, split=manifest.config.split, data_dir=Path(data_dir) if data_dir else None,
        resolution=manifest.config.resolution, evaluator=args.evaluator, device=args.device, generate=False,
        clip_model=args.clip_model)


def preflight_or_stop(request: PreflightRequest, quiet: bool = False) -> None:
    """Run the preflight; print its warnings (unless quiet) and raise PreflightError on a blocker."""
    items = require_preflight(request)
    for item in items:
        if item.status == "warn" and not quiet:
            print(f"cfbench: check: {item.line()}", file=sys.stderr)


def cmd_check(args) -> int:
    from cfbench.cli.run import apply_benchmark_settings

    for line in apply_benchmark_settings(args):
        print(line)
    items = preflight(request_from_args(args, generate=not args.eval_only, evaluate=not args.no_eval))
    for item in items:
        print(item.line())
    found = blockers(items)
    print(f"{len(found)} blocker(s), {sum(item.status == 'warn' for item in items)} warning(s)"
          + ("" if found else ": ready to run"))
    return 1 if found else 0


def add_verbs(verbs) -> None:
    """The ``check`` verb."""
    from cfbench.cli.run import _add_eval_arguments, _add_run_arguments

    check = verbs.add_parser(
        "check", help="preflight of a run: data, model weights, evaluator weights and trust, extras, disk, device",
        description="Check, in seconds and without writing anything, everything `cfbench run` with the same "
                    "options needs: the dataset and split (rows, skipped rows and why), the model and its weights, "
                    "every evaluator weights file and its trust state, optional extras, free disk space and the "
                    "device. One line per item; exit status 1 when any item is a BLOCKER. run, generate and eval "
                    "run the same checks first.")
    _add_run_arguments(check)
    _add_eval_arguments(check)
    check.add_argument("--no-eval", action="store_true", help="check for `cfbench generate` (no evaluation)")
    check.add_argument("--eval-only", action="store_true", help="check for evaluation only (no model)")
    check.set_defaults(handler=cmd_check)
