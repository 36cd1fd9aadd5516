"""The ``validate`` verb: the metric-validity suite on phantoms (:mod:`cfbench.suites.validity`)."""

from __future__ import annotations

import time
from pathlib import Path

from cfbench.cli.common import CliError, positive_int, progress
from cfbench.core import config


def cmd_validate(args) -> int:
    from cfbench.suites.validity import run_suite, validity_rows, write_validity

    started = time.perf_counter()
    runs_dir = Path(args.runs) if args.runs else config.resolve_path("runs_dir") / "validity"
    runs = run_suite(config.resolve_path("cache_dir"), runs_dir, n=args.n, progress=progress(args))
    written = write_validity(validity_rows(runs), Path(args.out))
    print(f"{len(runs)} runs under {runs_dir}; wrote {', '.join(str(p) for p in written)} "
          f"({time.perf_counter() - started:.0f} s)")
    return 0


def cmd_reverse(args) -> int:
    from cfbench.suites.reversibility import reverse_split

    try:
        out = reverse_split(args.run, args.out, args.data)
    except ValueError as error:
        raise CliError(str(error)) from error
    print(f"wrote the reversed split to {out}; run the same model on it (--data {out} --split SPLIT) and read "
          "its mae_to_target: the reversibility distance")
    return 0


def add_verbs(verbs) -> None:
    """The ``validate`` and ``reverse`` verbs."""
    validate = verbs.add_parser(
        "validate", help="the metric-validity suite: degradations of the exact answer on phantoms -> which metric "
                         "sees which family (Markdown, CSV, heatmap)",
        description="Runs identity, ground-truth, true-counterfactual and every degradation family of "
                    "cfbench.models.degradations at its fixed severities on a cached phantom split (200 samples, "
                    "128 px), evaluates them with the shipped phantom evaluator and writes validity.md, validity.csv "
                    "and validity.png: per metric and family, Spearman rho over severities, whether the intervals "
                    "of the exact answer and the worst level separate, the paired test, and every run ranked at or "
                    "above the exact answer. Runs resume.")
    validate.add_argument("--out", required=True, metavar="DIR", help="folder for validity.{md,csv,png}")
    validate.add_argument("--runs", metavar="DIR", help="folder for the suite's run folders (default {runs_dir}/validity)")
    validate.add_argument("--n", type=positive_int, default=200, metavar="N",
                          help="phantom pairs in the suite's split (default 200)")
    validate.set_defaults(handler=cmd_validate)

    reverse = verbs.add_parser(
        "reverse", help="reversibility (opt-in): a derived split of a run's outputs with the inverse instructions",
        description="Writes a split whose priors are the run's outputs, whose instructions are the inverse edits "
                    "(add <-> remove, levels swapped) and whose targets are the original inputs. Run the same "
                    "model on it like any run (resumable, --shard); its mae_to_target is the reversibility distance "
                    "mean |edit(edit(x, i), inverse(i)) - x| (on phantoms also mae_to_true_counterfactual).")
    reverse.add_argument("--run", required=True, metavar="DIR", help="a generated run folder")
    reverse.add_argument("--out", required=True, metavar="DIR", help="folder for the derived split")
    reverse.add_argument("--data", metavar="DIR", help="the run's dataset folder, if it moved since generation")
    reverse.set_defaults(handler=cmd_reverse)
