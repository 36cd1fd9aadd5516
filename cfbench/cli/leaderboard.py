"""Verbs that end in tables, plots and a gallery: ``leaderboard`` and ``demo`` (the whole pipeline on the
phantom demo split)."""

from __future__ import annotations

import sys
from pathlib import Path

from cfbench.cli.common import CliError, positive_int, progress, resolution_type
from cfbench.core import config
from cfbench.core.storage import atomic_write_text
from cfbench.phantom.scenario import DEMO_RESOLUTION


def _print_model_done(done) -> None:
    """One line as each demo model finishes: its headline metrics, or its error; the estimate for the rest."""
    from cfbench.leaderboard.console import duration_text, model_summary_line

    what = model_summary_line(done.row) if done.row else f"{done.model}: FAILED ({done.error})"
    left = done.total - done.index
    if not left:
        estimate = "all models done"
    elif done.seconds_left is None:
        estimate = f"{left} model(s) to go (an estimate follows once a model of each kind has finished)"
    else:
        estimate = f"about {duration_text(done.seconds_left)} left for {left} model(s)"
    print(f"[{done.index}/{done.total}] {duration_text(done.seconds)}: {what}; {estimate}", flush=True)


def _demo_preflight(args, runs_dir: Path) -> None:
    """The preflight of the demo: the phantom evaluator shipped, disk, device (the data is built here)."""
    from cfbench.cli.check import preflight_or_stop
    from cfbench.evaluation.preflight import PreflightRequest
    from cfbench.phantom.dataset import DEMO_SIZE

    preflight_or_stop(PreflightRequest(model=None, split="demo", data_dir=None, out=runs_dir,
                                       resolution=args.resolution, limit=DEMO_SIZE, evaluator="phantom-cnn",
                                       data_built_later=True),
                      quiet=not progress(args))


def cmd_demo(args) -> int:
    from cfbench.leaderboard.demo import format_table, run_demo

    runs_dir = Path(args.out) if args.out else config.resolve_path("runs_dir") / "demo"
    _demo_preflight(args, runs_dir)
    failed = []

    def model_done(done) -> None:
        _print_model_done(done)
        if done.error:
            failed.append(done.model)

    try:
        rows, notes = run_demo(config.resolve_path("cache_dir"), runs_dir, resolution=args.resolution,
                               all_models=args.all, only=args.models, progress=progress(args),
                               on_model_done=model_done, seeds=args.seeds)
    except ValueError as error:
        raise CliError(str(error)) from error
    for note in notes:
        print(f"  left out: {note}", file=sys.stderr)
    table = format_table(rows)
    print()
    print(table)
    atomic_write_text(runs_dir / "summary.md", table + "\n")
    print(f"\nrun folders and summary.md under {runs_dir}")
    if not args.no_leaderboard and rows:  # the finished models' leaderboard, even when a later one failed
        from cfbench.leaderboard.demo import write_demo_leaderboard

        leaderboard_dir = Path(args.leaderboard) if args.leaderboard else runs_dir / "leaderboard"
        result = write_demo_leaderboard(runs_dir, leaderboard_dir, [row["model"] for row in rows])
        print(f"leaderboard (tables, plots, gallery) under {leaderboard_dir}")
        for reason in result["skipped"]:
            print(f"  not written: {reason}", file=sys.stderr)
    return 1 if failed else 0


def cmd_leaderboard(args) -> int:
    from cfbench.leaderboard.table_model import LeaderboardError
    from cfbench.leaderboard.write import write_leaderboard

    if args.gallery_samples < 1 or args.thumbnail < 16:
        raise CliError("--gallery-samples must be >= 1 and --thumbnail >= 16")
    labels = {}
    for text in args.label or []:
        run, sep, name = text.partition("=")
        if not sep or not run or not name.strip():
            raise CliError(f"--label {text!r}: expected RUN=NAME (RUN: a run folder given, or its name)")
        labels[run] = name.strip()
    try:
        result = write_leaderboard(args.runs, args.out, include_reported=False if args.no_reported else True if args.all_reported else "auto",
                                   bold_reported=args.bold_reported, plots=not args.no_plots,
                                   gallery=not args.no_gallery, gallery_samples=args.gallery_samples,
                                   thumbnail=args.thumbnail, title=args.title, labels=labels,
                                   allow_mixed=args.allow_mixed)
    except LeaderboardError as error:
        raise CliError(str(error)) from error
    what = f"{len(args.runs)} runs" if args.runs else "the papers' reported tables only (no run folders given)"
    print(f"wrote {len(result['written'])} files for {what} to {args.out}; start with {Path(args.out) / 'README.md'}")
    for reason in result["skipped"]:
        print(f"  not written: {reason}", file=sys.stderr)
    return 0


def cmd_export(args) -> int:
    from cfbench.leaderboard.bundle import BundleError, export_run

    try:
        path = export_run(args.run, args.out, images=args.images)
    except BundleError as error:
        raise CliError(str(error)) from error
    print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB): manifest, metrics, per-sample predictions without "
          f"the patient columns{', images' if args.images else ', no images'}; `cfbench leaderboard {path.name} "
          "...` reads it like a run folder")
    return 0


def add_verbs(verbs) -> None:
    """The ``demo`` and ``leaderboard`` verbs."""
    demo = verbs.add_parser(
        "demo", help="the whole pipeline on the embedded phantom demo split: reference models and cfbench's "
                     "phantom-trained InstructX2X with and without RSE",
        description="Runs identity, instructpix2pix and instructx2x (cfbench's InstructX2X trained on phantoms, "
                    "without and with Region-Specific Editing), ground-truth and true-counterfactual on the demo "
                    "split, evaluates them with the shipped phantom evaluator, prints a summary and writes a "
                    "leaderboard. A few minutes on 2 cores; runs resume.")
    demo.add_argument("--out", metavar="DIR", help="folder for the demo runs (default {runs_dir}/demo)")
    demo.add_argument("--resolution", type=resolution_type, default=DEMO_RESOLUTION, metavar="PX",
                      help="benchmark image side in pixels: the phantom evaluator's input and the generator's side")
    demo.add_argument("--all", action="store_true",
                      help="also the two RSE ablations (relevance map only, pseudo mask only)")
    demo.add_argument("--models", nargs="+", metavar="NAME",
                      help="run only these demo models, e.g. --models identity ground-truth true-counterfactual "
                           "(seconds instead of minutes)")
    demo.add_argument("--seeds", type=int, choices=(1, 2), default=1, metavar="1|2",
                      help="2: also run every model with seed 1 for the seed diversity measures (the generators "
                           "take twice as long)")
    demo.add_argument("--leaderboard", metavar="DIR",
                      help="folder for the demo's leaderboard: tables, plots, gallery (default {out}/leaderboard)")
    demo.add_argument("--no-leaderboard", action="store_true", help="skip writing the leaderboard")
    demo.set_defaults(handler=cmd_demo)

    board = verbs.add_parser(
        "leaderboard", help="tables (Markdown, CSV, LaTeX), plots and an HTML gallery from evaluated run folders",
        description="Write a leaderboard folder from evaluated run folders: the papers' table layouts "
                    "(InstructX2X, ProgEmu) with bootstrap intervals, run ids and the best value in bold, the "
                    "papers' reported values as marked rows, plots (PNG + PDF), an HTML gallery and index.html (a "
                    "sortable, filterable page of every run; no server needed). "
                    "With no run folders, writes only the papers' reported tables.")
    board.add_argument("runs", nargs="*", metavar="RUN_DIR",
                       help="evaluated run folders (metrics.json present) or results bundles (`cfbench export`)")
    board.add_argument("--out", required=True, metavar="DIR", help="output folder, e.g. leaderboards/NAME")
    board.add_argument("--no-reported", action="store_true", help="leave out the papers' reported rows")
    board.add_argument("--all-reported", action="store_true",
                       help="show the papers' reported rows beside any runs (default: only beside runs on the dataset "
                            "they were measured on, e.g. MIMIC-EDIT-INSTRUCTION; never beside phantom runs)")
    board.add_argument("--bold-reported", action="store_true",
                       help="let reported rows compete for bold with measured rows (off by default: other test "
                            "sets, and the papers' KL scale is unpublished)")
    board.add_argument("--no-plots", action="store_true", help="skip the plots")
    board.add_argument("--no-gallery", action="store_true", help="skip the HTML gallery")
    board.add_argument("--gallery-samples", type=positive_int, default=8, metavar="N", help="samples in the gallery (default 8)")
    board.add_argument("--thumbnail", type=int, default=192, metavar="PX", help="gallery thumbnail side (default 192)")
    board.add_argument("--label", action="append", metavar="RUN=NAME",
                       help="name a run's row (RUN: the run folder as given, or its name), repeatable; default: "
                            "the run's --label, else the model's registry name and its non-default options")
    board.add_argument("--allow-mixed", action="store_true",
                       help="runs of different datasets, splits, resolutions, evaluators or protocols: one table set "
                            "per setting (in set-K/ folders, never bolded across) instead of refusing them")
    board.add_argument("--title", help="title of the leaderboard (default: from the output folder name)")
    board.set_defaults(handler=cmd_leaderboard)

    export = verbs.add_parser(
        "export", help="a small shareable archive of an evaluated run, read by `cfbench leaderboard` like the folder",
        description="Write RUN.cfbench.tar.gz: manifest.json, metrics.json, the per-sample predictions on the "
                    "generated images (predictions.csv without the patient columns: target labels, true race, "
                    "sex and age, the evaluator's outputs on the real images) and results.jsonl; no images "
                    "unless --images (MIMIC-derived images fall under PhysioNet's data use agreement). Groups "
                    "publish and merge results with it: `cfbench leaderboard A.cfbench.tar.gz B/ --out DIR`.")
    export.add_argument("run", metavar="RUN_DIR", help="evaluated run folder")
    export.add_argument("--out", metavar="FILE", help="archive path (default RUN_DIR.cfbench.tar.gz beside the folder)")
    export.add_argument("--images", action="store_true", help="include the generated images and guidance maps")
    export.set_defaults(handler=cmd_export)

