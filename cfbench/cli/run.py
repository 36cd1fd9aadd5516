"""Verbs that make and score runs: ``run`` (generate, then evaluate), ``generate``, ``eval``, ``compare``."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from cfbench.api.model import DEFAULT_RESOLUTION
from cfbench.api.registry import get_model_class, resolve_model_path
from cfbench.cli.common import (
    CliError,
    batch_size_type,
    option_pairs,
    positive_float,
    positive_int,
    progress,
    resolution_type,
)
from cfbench.core import config
from cfbench.datasets.layout import NO_DATA_FOLDER, SPLITS, WHERE_DATA_COMES_FROM, benchmark_settings, dataset_kind
from cfbench.evaluation.protocol import AGE_REFERENCES, CLIP_I_VARIANTS, EVALUATORS, KL_VARIANTS, Protocol


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="registered model name (see `cfbench models`) or module:Class")
    parser.add_argument("--split", required=True, choices=SPLITS,
                        help="split to run; 'demo' builds and caches a small phantom set when --data is not given")
    parser.add_argument("--data", metavar="DIR",
                        help="dataset folder (instructions.csv, past/, current/); default: setting data_dir")
    parser.add_argument("--model-path", metavar="P",
                        help="local weights folder/file; default: {weights_dir}/{model's folder}")
    parser.add_argument("--out", metavar="DIR",
                        help="run folder; default: {runs_dir}/{model}-{split}-seed{seed}. "
                             "An existing folder with the same config is resumed.")
    parser.add_argument("--limit", type=positive_int, metavar="N", help="only the first N samples of the split")
    parser.add_argument("--batch-size", type=batch_size_type, default="auto", metavar="B",
                        help="requests per model call, or 'auto': a measured choice per device and model, "
                             "recorded in the manifest (results do not depend on it; default auto)")
    parser.add_argument("--seed", type=int, default=0, metavar="S",
                        help="run seed; each sample's seed is derived from it and the sample id (default 0)")
    parser.add_argument("--seeds", type=int, choices=(1, 2), default=1, metavar="1|2",
                        help="2: also generate every sample with run seed + 1 (into RUN/seeds/seed<S+1>, resumable), "
                             "for the seed diversity measures seed_ms_ssim and seed_mae (default 1)")
    parser.add_argument("--device", default="cpu", metavar="D", help="torch device: cpu, cuda, cuda:1 (default cpu)")
    parser.add_argument("--resolution", type=resolution_type, default=None, metavar="PX",
                        help="benchmark resolution in pixels (default: what the split's dataset.json fixes, e.g. "
                             f"128 for the demo split; else {DEFAULT_RESOLUTION}); images are resized to it on load")
    parser.add_argument("--option", action="append", metavar="KEY=VALUE",
                        help="model-specific option, repeatable")
    parser.add_argument("--sample-timeout", type=positive_float, metavar="SECONDS",
                        help="record the samples of a model call that takes longer than this as failed and go on "
                             "(default: no limit)")
    parser.add_argument("--png-compression", type=int, choices=range(10), default=1, metavar="0-9",
                        help="zlib level of the 16-bit PNGs written (default 1; 0 writes about 2.5x faster, files "
                             "about 22%% larger; pixels identical; recorded in the manifest's runtime)")
    parser.add_argument("--region-masks", choices=["none", "pseudo"], default="none",
                        help="pseudo: pass each request the pseudo mask of its instruction's findings as "
                             "EditRequest.region_mask (the dataset's pseudo_masks.npz, e.g. MS-CXR boxes, else NIH "
                             "ChestX-ray14 boxes; recorded in the manifest); none: region_mask is None")
    parser.add_argument("--strict", action="store_true",
                        help="refuse a dataset with bad rows (default: leave them out, each named with its reason)")
    parser.add_argument("--label", metavar="NAME",
                        help="the run's name in leaderboards, stored in the manifest (default: the model's registry "
                             "name and the options that differ from its defaults)")


def apply_benchmark_settings(args) -> list[str]:
    """Fill in what the split fixes (dataset.json ``benchmark_settings``) and the command line left open:
    ``args.resolution`` and, for a model with a ``steps`` option, ``--option steps=N``. Returns one line per
    setting taken from the split (printed by the verbs)."""
    if getattr(args, "benchmark_settings_applied", False):
        return []
    args.benchmark_settings_applied = True
    data = Path(args.data) if args.data else None if args.split == "demo" else config.resolve_path("data_dir")
    if data is None and args.split == "demo":
        from cfbench.phantom.dataset import DEMO_BENCHMARK_SETTINGS

        fixed = dict(DEMO_BENCHMARK_SETTINGS)  # the embedded demo set, built below at this resolution
    else:
        fixed = benchmark_settings(data, args.split) if data is not None else {}
    taken = []
    if args.resolution is None:
        args.resolution = int(fixed.get("resolution", DEFAULT_RESOLUTION))
        if "resolution" in fixed:
            taken.append(f"resolution {args.resolution} px")
    options = option_pairs(args.option)
    if "steps" in fixed and "steps" not in options and _accepts_option(args.model, "steps"):
        args.option = [*(args.option or []), f"steps={fixed['steps']}"]
        taken.append(f"steps {fixed['steps']}")
    return [f"split {args.split}: {', '.join(taken)} (the split's benchmark settings; --resolution / --option "
            "steps=N override them)"] if taken else []


def _accepts_option(model: str, option: str) -> bool:
    """Whether the model's options dataclass (``settings_class``) has the option."""
    import dataclasses

    settings_class = getattr(get_model_class(model), "settings_class", None)
    return settings_class is not None and option in {field.name for field in dataclasses.fields(settings_class)}


def _data_dir(args) -> Path:
    if args.data:
        return Path(args.data)
    if args.split == "demo":
        from cfbench.phantom.dataset import demo_dataset

        return demo_dataset(config.resolve_path("cache_dir"), resolution=args.resolution, progress=progress(args))
    configured = config.resolve_path("data_dir")
    if configured is None:
        raise CliError(NO_DATA_FOLDER)
    return configured


def run_folder(args) -> Path:
    """--out, or {runs_dir}/{model}-{split}-seed{seed}."""
    safe_model = re.sub(r"[^A-Za-z0-9._-]+", "_", args.model)
    return Path(args.out) if args.out else config.resolve_path("runs_dir") / f"{safe_model}-{args.split}-seed{args.seed}"


def _settings_from_args(args):
    from cfbench.runs.generate import RunSettings

    from cfbench.core.errors import WeightsNotFoundError

    model_class = get_model_class(args.model)
    kind = "phantom" if args.split == "demo" and not args.data else None  # the embedded demo set is phantoms
    if kind is None and not args.model_path and model_class.phantom_weights:  # phantom data: the shipped checkpoint
        data = Path(args.data) if args.data else config.resolve_path("data_dir")
        kind = dataset_kind(data) if data else None
    try:
        model_path = resolve_model_path(model_class, args.model_path, kind)
    except WeightsNotFoundError as error:
        if not args.data and args.split != "demo" and config.resolve_path("data_dir") is None:
            raise WeightsNotFoundError(error.missing, "the dataset folder is not set either: pass --data DIR, set "
                                                      "CFBENCH_DATA_DIR or run `cfbench config set data_dir DIR`; "
                                                      + WHERE_DATA_COMES_FROM) from None
        raise
    out = run_folder(args)
    shard, device = _shard_and_device(getattr(args, "shard", None), args.device)
    return RunSettings(
        model=args.model, split=args.split, data_dir=_data_dir(args), out=out, model_path=model_path,
        resolution=args.resolution, seed=args.seed, limit=args.limit, batch_size=args.batch_size,
        device=device, options=option_pairs(args.option), shard=shard, sample_timeout=args.sample_timeout,
        strict=args.strict, png_compression=args.png_compression, region_masks=args.region_masks,
    )


def _shard_and_device(text: str | None, device: str):
    from cfbench.runs.launcher import LauncherError, shard_and_device

    try:
        return shard_and_device(text, device)
    except LauncherError as error:
        raise CliError(f"--shard: {error}") from error


def _generate(args) -> tuple[object, int]:
    from cfbench.runs.generate import generate

    settings = _settings_from_args(args)
    reports = [generate(settings, progress=progress(args))]
    if args.label is not None:
        from cfbench.runs.manifest import set_run_label

        try:
            set_run_label(reports[0].run_folder, args.label)
        except ValueError as error:
            raise CliError(f"--label: {error}") from error
    if getattr(args, "seeds", 1) == 2:
        from cfbench.runs.seed_pairs import generate_second_seed

        reports.append(generate_second_seed(settings, progress=progress(args)))
    for report in reports:
        print(f"run folder: {report.run_folder}")
        print(f"samples: {report.total} in scope, {report.already_done} already done, "
              f"{report.generated} generated now, {len(report.failed)} failed ({report.seconds:.1f} s)")
        for message in report.failed[:20]:
            print(f"  failed: {message}", file=sys.stderr)
        if len(report.failed) > 20:
            print(f"  ... and {len(report.failed) - 20} more (see failures.jsonl)", file=sys.stderr)
    return settings, (1 if any(report.failed for report in reports) else 0)


def _print_metrics(report: dict) -> None:
    """The metrics on the leaderboard's scale, with intervals, n, the reason for each '-' and small-n warnings."""
    from cfbench.leaderboard.console import metric_lines

    evaluator = (report.get("evaluator") or {}).get("evaluator", "none")
    print(f"evaluated {report['n_samples']} of {report['n_in_split']} samples (evaluator: {evaluator})")
    from cfbench.evaluation.protocol import Protocol

    known = {key: tuple(v) if isinstance(v, list) else v for key, v in report.get("protocol", {}).items()
             if key in Protocol.__dataclass_fields__}
    choices = Protocol(**known).choices_text(report.get("metrics", {}), brief=True)
    if choices:
        print(f"  protocol: {choices} (--kl, --age-reference, --clip-i; in words: metrics.json protocol_choices)")
    for line in metric_lines(report):
        print(line)


def _add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("evaluation protocol")
    group.add_argument("--evaluator", default="auto", choices=EVALUATORS,
                       help="auto: the shipped phantom CNN on phantom data, torchxrayvision otherwise; "
                            "none: pixel measures only")
    group.add_argument("--eval-batch-size", type=positive_int, default=16, metavar="B",
                       help="images per evaluator call (numbers do not depend on it)")
    group.add_argument("--loader-threads", type=positive_int, default=None, metavar="T",
                       help="threads that read and measure the next batch while the evaluators run (default: "
                            "one per core, at most 8; numbers do not depend on it)")
    group.add_argument("--bootstrap", type=int, default=Protocol.bootstrap_resamples, metavar="N",
                       help="bootstrap resamples for the intervals")
    group.add_argument("--fid-bootstrap", type=int, default=Protocol.fid_bootstrap_resamples, metavar="N",
                       help="bootstrap resamples for FID, each costs a matrix square root (0: no interval)")
    group.add_argument("--confidence", type=float, default=Protocol.confidence_level, metavar="LEVEL",
                       help="confidence level of the percentile bootstrap intervals, in (0, 1)")
    group.add_argument("--label-uncertain", default=Protocol.label_uncertain, choices=["exclude", "positive", "negative"],
                       help="what uncertain (-1) target labels become, per finding")
    group.add_argument("--label-blank", default=Protocol.label_blank, choices=["exclude", "negative"],
                       help="what blank target labels become, per finding")
    group.add_argument("--accuracy-terms", default=",".join(Protocol.accuracy_terms), metavar="NAMES",
                       help="metrics entering CMIG's accuracy mean (comma-separated)")
    group.add_argument("--retention-terms", default=",".join(Protocol.retention_terms), metavar="NAMES",
                       help="metrics entering CMIG's retention mean, e.g. race_auroc,age_pearson or sex_auroc,age_pearson")
    group.add_argument("--f1-threshold", type=float, default=Protocol.f1_threshold, metavar="P",
                       help="probability at or above which a finding counts as predicted present for F1")
    group.add_argument("--kl", dest="kl_variant", default=Protocol.kl_variant, choices=list(KL_VARIANTS),
                       help="KL between mean pathology probabilities on real (P) and generated (Q) images: "
                            + "; ".join(f"{k}: {v}" for k, v in KL_VARIANTS.items()))
    group.add_argument("--age-reference", default=Protocol.age_reference, choices=list(AGE_REFERENCES),
                       help="the true age the predicted age is correlated with: "
                            + "; ".join(f"{k}: {v}" for k, v in AGE_REFERENCES.items()))
    group.add_argument("--clip-i", dest="clip_i_variant", default=Protocol.clip_i_variant, choices=list(CLIP_I_VARIANTS),
                       help="which pair CLIP-I compares (needs --clip-model): "
                            + "; ".join(f"{k}: {v}" for k, v in CLIP_I_VARIANTS.items()))
    group.add_argument("--memorisation", action="store_true",
                       help="also compare each output with its nearest training-split images (evaluator features "
                            "and pixels; the index is built once and cached; phantom data without a train split: "
                            "the phantom training stream)")
    group.add_argument("--pseudo-masks", metavar="FILE",
                       help="pseudo masks for edit locality on real data (`cfbench masks build`); "
                            "default: NIH box unions shipped with torchxrayvision")
    group.add_argument("--clip-model", metavar="DIR",
                       help="BiomedCLIP folder (open_clip_config.json + open_clip_pytorch_model.bin) for CLIP-I; "
                            "for --clip-i image-text also text_model/ (BiomedBERT config.json + vocab.txt)")
    group.add_argument("--clip-text-model", metavar="DIR",
                       help="the BiomedBERT folder of the text tower (default: DIR/text_model of --clip-model)")


def _protocol(args) -> Protocol:
    try:
        return Protocol(
            label_uncertain=args.label_uncertain, label_blank=args.label_blank,
            accuracy_terms=tuple(t for t in args.accuracy_terms.split(",") if t),
            retention_terms=tuple(t for t in args.retention_terms.split(",") if t),
            f1_threshold=args.f1_threshold, confidence_level=args.confidence,
            bootstrap_resamples=args.bootstrap, fid_bootstrap_resamples=args.fid_bootstrap,
            kl_variant=args.kl_variant, age_reference=args.age_reference, clip_i_variant=args.clip_i_variant,
        )
    except ValueError as error:
        raise CliError(str(error)) from error


def _evaluate(args, run_folder) -> dict:
    from cfbench.evaluation.evaluate import evaluate_run

    extra = ()
    if args.clip_model:
        from cfbench.evaluation.biomedclip import BiomedCLIPEmbedder

        extra = (BiomedCLIPEmbedder.from_folder(args.clip_model, device=args.device,
                                                text_model=args.clip_text_model,
                                                with_text=args.clip_i_variant == "image-text"),)
    elif args.clip_i_variant == "image-text":
        raise CliError("--clip-i image-text needs --clip-model DIR (BiomedCLIP with its text tower)")
    masks = None
    if args.pseudo_masks:
        from cfbench.datasets.pseudo_masks import PseudoMasks

        masks = PseudoMasks.load(args.pseudo_masks)
    return evaluate_run(run_folder, data_dir=getattr(args, "eval_data", None), evaluator=args.evaluator,
                        protocol=_protocol(args), extra_evaluators=extra, pseudo_masks=masks,
                        batch_size=args.eval_batch_size, device=args.device, progress=progress(args),
                        loader_threads=args.loader_threads, partial=getattr(args, "partial", False),
                        memorisation=args.memorisation)


def cmd_generate(args) -> int:
    from cfbench.cli.check import preflight_or_stop, request_from_args

    for line in apply_benchmark_settings(args):
        print(line)
    preflight_or_stop(request_from_args(args, evaluate=False), quiet=not progress(args))
    return _generate(args)[1]


def cmd_run(args) -> int:
    from cfbench.cli.check import preflight_or_stop, request_from_args

    for line in apply_benchmark_settings(args):
        print(line)
    preflight_or_stop(request_from_args(args), quiet=not progress(args))  # before hours of generation
    settings, status = _generate(args)
    _print_metrics(_evaluate(args, settings.out))
    return status


def cmd_eval(args) -> int:
    from cfbench.cli.check import eval_request, preflight_or_stop

    preflight_or_stop(eval_request(args), quiet=not progress(args))
    report = _evaluate(args, args.run)
    _print_metrics(report)
    print(f"wrote {Path(args.run) / 'metrics.json'}, predictions.csv and evaluation.npz")
    return 0


def cmd_compare(args) -> int:
    from cfbench.core.storage import atomic_write_json
    from cfbench.evaluation.comparability import comparability_key, describe_value, key_differences
    from cfbench.evaluation.results import load_table, read_metrics
    from cfbench.evaluation.scoring import compare_tables

    keys = [comparability_key(read_metrics(run)) for run in (args.run_a, args.run_b)]
    differences = key_differences(*keys, ignore=("protocol",))  # compare rescores both with one protocol
    if differences:
        detail = "; ".join(f"{field}: {describe_value(keys[0][field])} vs {describe_value(keys[1][field])}"
                           for field in differences)
        if not args.allow_mixed:
            raise CliError(f"the two runs cannot be compared: they differ in {detail}. Re-evaluate them in one "
                           "setting, or pass --allow-mixed to compare the shared samples anyway")
        print(f"warning: the runs differ in {detail} (--allow-mixed)", file=sys.stderr)
    result = compare_tables(load_table(args.run_a), load_table(args.run_b), _protocol(args))
    for line in comparison_lines(result, args.confidence, str(args.run_a), str(args.run_b)):
        print(line)
    if args.out:
        atomic_write_json(args.out, {"run_a": str(args.run_a), "run_b": str(args.run_b),
                                     "protocol": _protocol(args).as_dict(), **result})
        print(f"wrote {args.out}")
    return 0


def comparison_lines(result: dict, confidence: float, run_a: str, run_b: str) -> list[str]:
    """``cfbench compare``'s table: each metric on the leaderboard's scale (the one the tables, plots and
    console use), with its direction, the paired interval, and which run is better where it excludes 0."""
    from cfbench.evaluation.metric_names import metric_name
    from cfbench.leaderboard.console import display_scale, display_title
    from cfbench.leaderboard.table_model import format_value

    level = int(round(100 * confidence))
    lines = [f"paired differences A - B on {result['n_shared']} shared samples (A = {run_a}, B = {run_b}); "
             "values on the leaderboard's scale"]
    rows = []
    for name, entry in result["differences"].items():
        factor, decimals, unit = display_scale(name)
        low, high = entry["ci_low"], entry["ci_high"]

        def shown(value):
            return format_value(None if value is None else value * factor, decimals)

        verdict = ""
        if low is not None and high is not None and (low > 0 or high < 0):
            try:
                better = metric_name(name).higher_is_better
            except KeyError:  # a metric this version does not name
                better = None
            if better is None:
                verdict = "differs"
            else:
                verdict = "A better" if (low > 0) == better else "B better"
        rows.append((display_title(name), shown(entry["value"]), f"[{shown(low)}, {shown(high)}]", unit, verdict))
    header = ("metric", "A - B", f"{level}% CI", "scale", "")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    for row in [header, *rows]:
        lines.append("  " + "  ".join([row[0].ljust(widths[0]), row[1].rjust(widths[1]), row[2].ljust(widths[2]),
                                       row[3].ljust(widths[3]), row[4]]).rstrip())
    return lines


def add_verbs(verbs) -> None:
    """The ``run``, ``generate``, ``eval`` and ``compare`` verbs."""
    run = verbs.add_parser("run", help="generate counterfactuals for a split, then evaluate them")
    _add_run_arguments(run)
    _add_eval_arguments(run)
    run.set_defaults(handler=cmd_run)

    gen = verbs.add_parser(
        "generate", help="generate counterfactuals for a split (resumable; --shard for one process per GPU)",
        description="Generate counterfactuals into a run folder; re-run to resume. Many GPUs: start one process per "
                    "GPU with --shard K/N (or --shard auto under torchrun / accelerate launch / srun) and the same "
                    "--out; then `cfbench eval --run OUT` once all are done. Results do not depend on the sharding.")
    _add_run_arguments(gen)
    gen.add_argument("--shard", metavar="K/N",
                     help="generate only part K (0-based) of N of the split; 'auto' reads RANK/WORLD_SIZE (torchrun, "
                          "accelerate) or SLURM_PROCID/SLURM_NTASKS, and --device cuda becomes the local GPU")
    gen.set_defaults(handler=cmd_generate)

    evaluate = verbs.add_parser("eval", help="evaluate a run folder and write metrics.json")
    evaluate.add_argument("--run", required=True, metavar="DIR", help="run folder written by run/generate")
    evaluate.add_argument("--data", dest="eval_data", metavar="DIR",
                          help="dataset folder, if it moved since generation")
    evaluate.add_argument("--device", default="cpu", metavar="D", help="torch device for the evaluators")
    evaluate.add_argument("--partial", action="store_true",
                          help="evaluate the samples finished so far while `cfbench generate` still writes the run "
                               "(refused without it)")
    _add_eval_arguments(evaluate)
    evaluate.set_defaults(handler=cmd_eval)

    compare = verbs.add_parser(
        "compare", help="paired differences between two evaluated runs, with intervals",
        description="Paired differences A - B of every metric on the samples both runs share, with paired "
                    "bootstrap intervals (the same resampled samples for both runs); 'differs' marks an interval "
                    "that excludes 0. Both runs must have been evaluated with the same evaluator.")
    compare.add_argument("run_a", metavar="RUN_A", help="evaluated run folder A (metrics.json, evaluation.npz)")
    compare.add_argument("run_b", metavar="RUN_B", help="evaluated run folder B")
    compare.add_argument("--out", metavar="FILE", help="also write the differences as JSON")
    compare.add_argument("--allow-mixed", action="store_true",
                         help="compare runs of different datasets, splits, resolutions or evaluators (refused by default)")
    _add_eval_arguments(compare)
    compare.set_defaults(handler=cmd_compare)

