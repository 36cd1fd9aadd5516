"""The ``cfbench`` command line: one verb per job.

    cfbench demo                                  the whole pipeline on the embedded phantom suite
    cfbench run --model NAME --split SPLIT        generate, then evaluate
    cfbench generate --model NAME --split SPLIT   generate only (resumable)
    cfbench eval --run DIR                        evaluate a run folder
    cfbench models                                registered models, capabilities, weights
    cfbench config [set KEY VALUE]                settings in force and where they come from
    cfbench data phantom --n 600 --out DIR        write a phantom dataset
    cfbench train instructx2x --data D --base B --out O   fine-tune InstructX2X (resumable)
    cfbench convert-ckpt CKPT --config DIR --out DIR      LDM checkpoint -> diffusers folder
    cfbench data build mimic|nih|icg ...          build an edit dataset from a public or PhysioNet release
    cfbench masks build [--ms-cxr CSV ...]        pseudo masks for edit locality and RSE
    cfbench leaderboard RUN_DIR... --out DIR      tables (md/csv/tex), plots and an HTML gallery
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from cfbench import config
from cfbench.dataset import SPLITS, DatasetError
from cfbench.evaluate import EVALUATORS, EvaluationError
from cfbench.interface import DEFAULT_RESOLUTION
from cfbench.registry import (
    PluginError,
    UnknownModelError,
    WeightsNotFoundError,
    available_models,
    expected_weights_path,
    get_model_class,
    resolve_model_path,
)
from cfbench.runstore import RunConfigMismatch
from cfbench.scoring import Protocol
from cfbench.storage import atomic_write_text


class CliError(RuntimeError):
    """An error the user can fix; printed without a traceback."""


def _option_pairs(values: list[str] | None) -> dict[str, str]:
    options = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"--option expects KEY=VALUE, got {item!r}")
        options[key] = value
    return options


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
    parser.add_argument("--limit", type=int, metavar="N", help="only the first N samples of the split")
    parser.add_argument("--batch-size", type=int, default=1, metavar="B",
                        help="requests per model call (results do not depend on it; default 1)")
    parser.add_argument("--seed", type=int, default=0, metavar="S",
                        help="run seed; each sample's seed is derived from it and the sample id (default 0)")
    parser.add_argument("--device", default="cpu", metavar="D", help="torch device: cpu, cuda, cuda:1 (default cpu)")
    parser.add_argument("--resolution", type=int, default=DEFAULT_RESOLUTION, metavar="PX",
                        help=f"benchmark resolution in pixels (default {DEFAULT_RESOLUTION})")
    parser.add_argument("--option", action="append", metavar="KEY=VALUE",
                        help="model-specific option, repeatable")


def _progress(args) -> bool:
    return not getattr(args, "quiet", False)


def _data_dir(args) -> Path:
    if args.data:
        return Path(args.data)
    if args.split == "demo":
        from cfbench.phantom_dataset import demo_dataset

        return demo_dataset(config.resolve_path("cache_dir"), size=args.resolution, progress=_progress(args))
    configured = config.resolve_path("data_dir")
    if configured is None:
        raise CliError(
            "no dataset folder: pass --data DIR, set CFBENCH_DATA_DIR, or run `cfbench config set data_dir DIR` "
            "(or use --split demo for the embedded phantom set)"
        )
    return configured


def _settings_from_args(args):
    from cfbench.runner import RunSettings

    model_class = get_model_class(args.model)
    model_path = resolve_model_path(model_class, args.model_path)
    if args.batch_size < 1:
        raise CliError("--batch-size must be >= 1")
    if args.limit is not None and args.limit < 1:
        raise CliError("--limit must be >= 1")
    safe_model = re.sub(r"[^A-Za-z0-9._-]+", "_", args.model)
    out = Path(args.out) if args.out else config.resolve_path("runs_dir") / f"{safe_model}-{args.split}-seed{args.seed}"
    shard, device = _shard_and_device(getattr(args, "shard", None), args.device)
    return RunSettings(
        model=args.model, split=args.split, data_dir=_data_dir(args), out=out, model_path=model_path,
        resolution=args.resolution, seed=args.seed, limit=args.limit, batch_size=args.batch_size,
        device=device, options=_option_pairs(args.option), shard=shard,
    )


SHARD_ENVIRONMENTS = (("RANK", "WORLD_SIZE", "LOCAL_RANK"), ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"))


def _shard_and_device(text: str | None, device: str):
    """The Shard of ``--shard`` (None without it) and the device: under ``auto``, from the launcher's
    environment, with a bare ``cuda`` device made the process's local GPU."""
    from cfbench.runstore import Shard

    if text is None:
        return None, device
    if text != "auto":
        try:
            return Shard.parse(text), device
        except ValueError as error:
            raise CliError(f"--shard: {error}") from error
    for rank, size, local in SHARD_ENVIRONMENTS:
        if rank in os.environ and size in os.environ:
            shard = Shard(int(os.environ[rank]), int(os.environ[size]))
            if device == "cuda":
                device = f"cuda:{os.environ.get(local, '0')}"
            return shard, device
    raise CliError("--shard auto: no launcher environment found (RANK/WORLD_SIZE from torchrun or accelerate "
                   "launch, SLURM_PROCID/SLURM_NTASKS from srun); pass --shard K/N instead")


def _generate(args) -> tuple[object, int]:
    from cfbench.runner import generate

    settings = _settings_from_args(args)
    report = generate(settings, progress=_progress(args))
    print(f"run folder: {report.run_folder}")
    print(f"samples: {report.total} in scope, {report.already_done} already done, "
          f"{report.generated} generated now, {len(report.failed)} failed ({report.seconds:.1f} s)")
    for message in report.failed[:20]:
        print(f"  failed: {message}", file=sys.stderr)
    if len(report.failed) > 20:
        print(f"  ... and {len(report.failed) - 20} more (see failures.jsonl)", file=sys.stderr)
    return settings, (1 if report.failed else 0)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _print_metrics(report: dict) -> None:
    evaluator = (report.get("evaluator") or {}).get("evaluator", "none")
    print(f"evaluated {report['n_samples']} of {report['n_in_split']} samples (evaluator: {evaluator})")
    level = int(round(100 * report["protocol"]["confidence_level"]))
    print(f"  {'metric':<34} {'value':>8}  {level}% CI")
    from cfbench.evaluate import METRIC_DESCRIPTIONS

    headline = list(METRIC_DESCRIPTIONS)  # headline metrics first, in protocol order; per-finding ones after
    ordered = sorted(report["metrics"].items(),
                     key=lambda item: (0, headline.index(item[0])) if item[0] in headline else (1, item[0]))
    for name, entry in ordered:
        interval = f"[{_number(entry['ci_low'])}, {_number(entry['ci_high'])}]" if entry["n_resamples"] else ""
        print(f"  {name:<34} {_number(entry['value']):>8}  {interval}")
    for name, reason in report.get("skipped", {}).items():
        print(f"  {name:<34} {'-':>8}  not computed: {reason}")


def _add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("evaluation protocol")
    group.add_argument("--evaluator", default="auto", choices=EVALUATORS,
                       help="auto: the shipped phantom CNN on phantom data, torchxrayvision otherwise; "
                            "none: pixel measures only")
    group.add_argument("--eval-batch-size", type=int, default=16, metavar="B")
    group.add_argument("--bootstrap", type=int, default=Protocol.bootstrap_resamples, metavar="N",
                       help=f"bootstrap resamples for the intervals (default {Protocol.bootstrap_resamples})")
    group.add_argument("--fid-bootstrap", type=int, default=Protocol.fid_bootstrap_resamples, metavar="N",
                       help=f"bootstrap resamples for FID, each costs a matrix square root "
                            f"(default {Protocol.fid_bootstrap_resamples}; 0: no interval)")
    group.add_argument("--confidence", type=float, default=Protocol.confidence_level, metavar="LEVEL")
    group.add_argument("--label-uncertain", default=Protocol.label_uncertain, choices=["exclude", "positive", "negative"],
                       help="what uncertain (-1) target labels become (default exclude, per finding)")
    group.add_argument("--label-blank", default=Protocol.label_blank, choices=["exclude", "negative"],
                       help="what blank target labels become (default exclude, per finding)")
    group.add_argument("--accuracy-terms", default=",".join(Protocol.accuracy_terms), metavar="NAMES",
                       help="metrics entering CMIG's accuracy mean (comma-separated)")
    group.add_argument("--retention-terms", default=",".join(Protocol.retention_terms), metavar="NAMES",
                       help="metrics entering CMIG's retention mean, e.g. race_auroc,age_pearson or sex_auroc,age_pearson")
    group.add_argument("--f1-threshold", type=float, default=Protocol.f1_threshold, metavar="P")
    group.add_argument("--pseudo-masks", metavar="FILE",
                       help="pseudo masks for edit locality on real data (`cfbench masks build`); "
                            "default: NIH box unions shipped with torchxrayvision")
    group.add_argument("--clip-model", metavar="DIR",
                       help="BiomedCLIP folder (open_clip_config.json + open_clip_pytorch_model.bin) for CLIP-I")


def _protocol(args) -> Protocol:
    return Protocol(
        label_uncertain=args.label_uncertain, label_blank=args.label_blank,
        accuracy_terms=tuple(t for t in args.accuracy_terms.split(",") if t),
        retention_terms=tuple(t for t in args.retention_terms.split(",") if t),
        f1_threshold=args.f1_threshold, confidence_level=args.confidence,
        bootstrap_resamples=args.bootstrap, fid_bootstrap_resamples=args.fid_bootstrap,
    )


def _evaluate(args, run_folder) -> dict:
    from cfbench.evaluate import evaluate_run

    extra = ()
    if args.clip_model:
        from cfbench.biomedclip import BiomedCLIPEmbedder

        extra = (BiomedCLIPEmbedder.from_folder(args.clip_model, device=args.device),)
    masks = None
    if args.pseudo_masks:
        from cfbench.pseudo_masks import PseudoMasks

        masks = PseudoMasks.load(args.pseudo_masks)
    return evaluate_run(run_folder, data_dir=getattr(args, "eval_data", None), evaluator=args.evaluator,
                        protocol=_protocol(args), extra_evaluators=extra, pseudo_masks=masks,
                        batch_size=args.eval_batch_size, device=args.device, progress=_progress(args))


def cmd_generate(args) -> int:
    return _generate(args)[1]


def cmd_run(args) -> int:
    settings, status = _generate(args)
    _print_metrics(_evaluate(args, settings.out))
    return status


def cmd_eval(args) -> int:
    report = _evaluate(args, args.run)
    _print_metrics(report)
    print(f"wrote {Path(args.run) / 'metrics.json'}, predictions.csv and evaluation.npz")
    return 0


def cmd_compare(args) -> int:
    from cfbench.evaluate import load_table, read_metrics
    from cfbench.scoring import compare_tables
    from cfbench.storage import atomic_write_json

    identities = [read_metrics(run).get("evaluator") for run in (args.run_a, args.run_b)]
    if identities[0] != identities[1]:
        raise CliError("the two runs were evaluated with different evaluators; re-evaluate them with the same one")
    result = compare_tables(load_table(args.run_a), load_table(args.run_b), _protocol(args))
    level = int(round(100 * args.confidence))
    print(f"paired differences A - B on {result['n_shared']} shared samples (A = {args.run_a}, B = {args.run_b})")
    print(f"  {'metric':<34} {'A - B':>8}  {level}% CI            ")
    for name, entry in result["differences"].items():
        low, high = entry["ci_low"], entry["ci_high"]
        verdict = "" if low is None or high is None else ("differs" if low > 0 or high < 0 else "")
        print(f"  {name:<34} {_number(entry['value']):>8}  [{_number(low)}, {_number(high)}]  {verdict}")
    if args.out:
        atomic_write_json(args.out, {"run_a": str(args.run_a), "run_b": str(args.run_b),
                                     "protocol": _protocol(args).as_dict(), **result})
        print(f"wrote {args.out}")
    return 0


def cmd_models(args) -> int:
    models = available_models()
    rows = []
    for name, entry in models.items():
        cls = entry.model_class
        caps = cls.capabilities
        weights = expected_weights_path(cls)
        rows.append({
            "name": name,
            "origin": entry.origin,
            "input": "edits the input image" if caps.edits_image else "does not edit the input",
            "guidance_map": caps.guidance_map,
            "explanation": caps.explanation,
            "native_resolution": cls.native_resolution,
            "weights": str(weights) if weights else None,
            "weights_present": None if weights is None else weights.exists(),
            "description": cls.description,
        })
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        flags = [row["input"]] + [flag for flag in ("guidance_map", "explanation") if row[flag]]
        if row["weights"] is None:
            weights = "no weights needed"
        else:
            weights = f"weights {'present' if row['weights_present'] else 'MISSING'} at {row['weights']}"
        print(f"{row['name']:<22} [{', '.join(flags)}] {row['native_resolution']} px, {row['origin']}; {weights}")
        if row["description"]:
            print(f"{'':<22} {row['description']}")
    return 0


def cmd_config(args) -> int:
    if args.action == "set":
        if not args.key or args.value is None:
            raise CliError("usage: cfbench config set KEY VALUE")
        path = config.set_value(args.key, args.value)
        print(f"wrote {args.key} = {args.value} to {path}")
        return 0
    print(f"config file: {config.config_file_path()}")
    for setting in config.all_settings():
        print(f"{setting.key:<12} {setting.value or '(unset)':<50} from {setting.source}")
        print(f"{'':<12} {config.SETTINGS[setting.key]}")
    return 0


def cmd_weights(args) -> int:
    from cfbench import weights

    if args.action == "fetch":
        keys = list(weights.CATALOGUE) if args.all else (args.keys or None)
        try:
            rows = weights.fetch(keys, progress=_progress(args), force=args.force, cache_dir=args.cache_dir)
        except (weights.FetchError, KeyError) as error:
            raise CliError(error.args[0] if error.args else str(error)) from error
        print(weights.weights_table(rows))
        return 0
    if args.keys:
        raise CliError("keys are only taken by `cfbench weights fetch KEY ...`")
    rows = weights.weights_status(include_optional=args.all, cache_dir=args.cache_dir)
    if args.json:
        print(json.dumps([row.to_dict() for row in rows], indent=2))
    else:
        print(weights.weights_table(rows))
    return 0


def cmd_data_phantom(args) -> int:
    from cfbench.phantom_dataset import build_phantom_dataset

    out = build_phantom_dataset(args.out, args.n, seed=args.seed, size=args.size, progress=_progress(args))
    print(f"wrote {args.n} phantom pairs to {out}")
    return 0


def cmd_phantom_train(args) -> int:
    from cfbench.phantom_training import train_phantom_evaluators

    record = train_phantom_evaluators(args.out, n_train=args.n_train, n_val=args.n_val, epochs=args.epochs,
                                      seed=args.seed, render_size=args.render_size, workers=args.workers,
                                      progress=_progress(args))
    held_out = record["heldout"]
    print(f"wrote phantom_evaluator.safetensors and phantom_evaluator.json to {args.out}")
    print(f"held-out ({args.n_val} phantoms):")
    for finding, value in held_out["auroc"].items():
        print(f"  AUROC {finding:<18} {value:.4f}")
    print(f"  group AUROC              {held_out['group_auroc']:.4f}")
    print(f"  sex AUROC                {held_out['sex_auroc']:.4f}")
    print(f"  age Pearson r            {held_out['age_pearson']:.4f} (MAE {held_out['age_mae']:.2f} years)")
    print(f"  targets met: {held_out['targets_met']}")
    return 0 if held_out["targets_met"] else 1


def cmd_data_build_nih(args) -> int:
    from cfbench.nih import build_nih_dataset

    counts = build_nih_dataset(args.images, args.out, data_entry=args.data_entry, settings=_pair_settings(args),
                               workers=args.workers, limit=args.limit, progress=_progress(args))
    return _report_build(counts, "NIH", args.out)


def cmd_data_build_mimic(args) -> int:
    from cfbench.mimic_build import MimicSources, build_mimic_dataset

    sources = MimicSources(Path(args.mimic_cxr), Path(args.diff_vqa), Path(args.mimic_iv),
                           Path(args.reports) if args.reports else None)
    try:
        info = build_mimic_dataset(sources, args.out, settings=_pair_settings(args), workers=args.workers,
                                   limit=args.limit, ms_cxr=args.ms_cxr, progress=_progress(args))
    except FileNotFoundError as error:
        raise CliError(str(error)) from error
    for step, count in info["funnel"].items():
        print(f"  {step}: {count}")
    if info["unknown_phrases"]:
        print(f"  phrases outside the vocabulary: {len(info['unknown_phrases'])} distinct (see DATASET_CARD.md)")
    return _report_build(info, "MIMIC-EDIT-INSTRUCTION", args.out)


def _pair_settings(args):
    from cfbench.pair_build import PairSettings

    return PairSettings(size=args.size, register=not args.no_register, mi_threshold=args.mi_threshold)


def _report_build(counts: dict, source: str, out: str) -> int:
    print(f"wrote {counts['written']} of {counts['pairs']} {source} pairs to {out}")
    for message in counts["failed"][:20]:
        print(f"  failed: {message}", file=sys.stderr)
    if len(counts["failed"]) > 20:
        print(f"  ... and {len(counts['failed']) - 20} more (see dataset.json)", file=sys.stderr)
    return 0


def cmd_data_build_icg(args) -> int:
    from cfbench.icg import build_icg_dataset

    counts = build_icg_dataset(args.root, args.out, size=args.size, progress=_progress(args))
    return _report_build(counts, "ICG-CXR", args.out)


def cmd_masks_build(args) -> int:
    from cfbench import pseudo_masks

    if args.ms_cxr:
        if not args.metadata:
            raise CliError("--ms-cxr needs --metadata (mimic-cxr-2.0.0-metadata.csv.gz) for the view positions")
        masks = pseudo_masks.ms_cxr_pseudo_masks(args.ms_cxr, args.metadata, args.size)
    else:
        masks = pseudo_masks.nih_pseudo_masks(args.size)
    masks.save(args.out)
    print(f"wrote {len(masks.masks)} pseudo masks ({', '.join(sorted(masks.masks))}) from {masks.source} to {args.out}")
    return 0


def cmd_demo(args) -> int:
    from cfbench.demo import format_table, run_demo

    runs_dir = Path(args.out) if args.out else config.resolve_path("runs_dir") / "demo"
    rows = run_demo(config.resolve_path("cache_dir"), runs_dir, resolution=args.resolution,
                    progress=_progress(args))
    table = format_table(rows)
    print()
    print(table)
    atomic_write_text(runs_dir / "summary.md", table + "\n")
    print(f"\nrun folders and summary.md under {runs_dir}")
    if not args.no_leaderboard:
        from cfbench.demo import write_demo_leaderboard

        leaderboard_dir = Path(args.leaderboard) if args.leaderboard else runs_dir / "leaderboard"
        result = write_demo_leaderboard(runs_dir, leaderboard_dir)
        print(f"leaderboard (tables, plots, gallery) under {leaderboard_dir}")
        for reason in result["skipped"]:
            print(f"  not written: {reason}", file=sys.stderr)
    return 0


def cmd_leaderboard(args) -> int:
    from cfbench.leaderboard import LeaderboardError
    from cfbench.leaderboard_output import write_leaderboard

    if args.gallery_samples < 1 or args.thumbnail < 16:
        raise CliError("--gallery-samples must be >= 1 and --thumbnail >= 16")
    try:
        result = write_leaderboard(args.runs, args.out, include_reported=not args.no_reported,
                                   bold_reported=args.bold_reported, plots=not args.no_plots,
                                   gallery=not args.no_gallery, gallery_samples=args.gallery_samples,
                                   thumbnail=args.thumbnail, title=args.title)
    except LeaderboardError as error:
        raise CliError(str(error)) from error
    what = f"{len(args.runs)} runs" if args.runs else "the papers' reported tables only (no run folders given)"
    print(f"wrote {len(result['written'])} files for {what} to {args.out}; start with {Path(args.out) / 'README.md'}")
    for reason in result["skipped"]:
        print(f"  not written: {reason}", file=sys.stderr)
    return 0


def cmd_train_instructx2x(args) -> int:
    from cfbench.instructx2x_init import BaseModelError
    from cfbench.train_instructx2x import TrainConfig, TrainingError, train_instructx2x

    train_config = TrainConfig(
        data_dir=args.data, base_model=args.base, output_dir=args.out, split=args.split,
        resolution=args.resolution, max_train_steps=args.steps, target_batch_size=args.target_batch_size,
        per_device_batch_size=args.batch_size, learning_rate=args.lr, lr_warmup_steps=args.warmup_steps,
        mixed_precision=args.mixed_precision, use_ema=not args.no_ema, ema_decay=args.ema_decay,
        rotation_degrees=args.rotation, center_crop_fraction=args.crop_fraction, hflip_probability=args.hflip,
        checkpoint_every=args.checkpoint_every, keep_checkpoints=args.keep_checkpoints, log_every=args.log_every,
        seed=args.seed, num_workers=args.workers, gradient_checkpointing=args.gradient_checkpointing,
    )
    try:
        summary = train_instructx2x(train_config, progress=_progress(args))
    except (TrainingError, BaseModelError) as error:
        raise CliError(str(error)) from error
    if summary:  # the main process
        print(f"trained {summary['steps_this_session']} step(s) (resumed from step {summary['resumed_from_step']}), "
              f"last loss {summary['last_loss']}; pipeline with {summary['exported_weights']} weights in {args.out}")
    return 0


def cmd_convert_ckpt(args) -> int:
    from cfbench.ldm_convert import LdmCheckpointError, convert_ldm_checkpoint

    try:
        summary = convert_ldm_checkpoint(args.checkpoint, args.config, args.out, weights=args.weights,
                                         allow_pickle=args.allow_pickle)
    except LdmCheckpointError as error:
        raise CliError(str(error)) from error
    print(f"wrote {summary['pipeline']} ({summary['unet_weights']} UNet weights, UNet in_channels "
          f"{summary['unet_in_channels']}) to {summary['out']}")
    return 0


def _add_training_verbs(verbs) -> None:
    train = verbs.add_parser("train", help="train generators on an edit dataset")
    train_verbs = train.add_subparsers(dest="train_verb", required=True, metavar="MODEL")
    x2x = train_verbs.add_parser(
        "instructx2x", help="fine-tune an InstructPix2Pix UNet (accelerate; resumes from the last checkpoint)",
        description="Fine-tune InstructX2X from an InstructPix2Pix or Stable Diffusion diffusers folder. "
                    "Multi-GPU: accelerate launch -m cfbench.cli train instructx2x ... Re-run the same "
                    "command to resume; OUT ends as a StableDiffusionInstructPix2PixPipeline folder (EMA weights).")
    x2x.add_argument("--data", required=True, metavar="DIR", help="dataset folder (instructions.csv, past/, current/)")
    x2x.add_argument("--base", required=True, metavar="PATH",
                     help="InstructPix2Pix or Stable Diffusion diffusers folder (conv_in is widened for SD)")
    x2x.add_argument("--out", required=True, metavar="DIR")
    x2x.add_argument("--split", default="train", choices=SPLITS)
    x2x.add_argument("--resolution", type=int, default=DEFAULT_RESOLUTION, metavar="PX")
    x2x.add_argument("--steps", type=int, default=6500, help="optimizer steps (default 6500)")
    x2x.add_argument("--target-batch-size", type=int, default=576, metavar="N",
                     help="effective batch per optimizer step (default 576); must be a multiple of "
                          "--batch-size x processes, the quotient is the gradient accumulation")
    x2x.add_argument("--batch-size", type=int, default=4, metavar="B", help="per-device micro-batch (default 4)")
    x2x.add_argument("--lr", type=float, default=1e-4, help="learning rate (default 1e-4)")
    x2x.add_argument("--warmup-steps", type=int, default=0, metavar="N")
    x2x.add_argument("--mixed-precision", default="no", choices=["no", "fp16", "bf16"])
    x2x.add_argument("--no-ema", action="store_true", help="export the raw weights, keep no EMA")
    x2x.add_argument("--ema-decay", type=float, default=0.9999)
    x2x.add_argument("--rotation", type=float, default=2.0, metavar="DEG", help="max rotation (default 2)")
    x2x.add_argument("--crop-fraction", type=float, default=1.0, metavar="F",
                     help="centre crop side as a fraction of the image (default 1.0: none)")
    x2x.add_argument("--hflip", type=float, default=0.5, metavar="P",
                     help="horizontal flip probability; left/right words are swapped (default 0.5)")
    x2x.add_argument("--checkpoint-every", type=int, default=500, metavar="K")
    x2x.add_argument("--keep-checkpoints", type=int, default=2, metavar="N")
    x2x.add_argument("--log-every", type=int, default=10, metavar="K")
    x2x.add_argument("--seed", type=int, default=0)
    x2x.add_argument("--workers", type=int, default=2, metavar="N", help="data-loading processes (default 2)")
    x2x.add_argument("--gradient-checkpointing", action="store_true")
    x2x.set_defaults(handler=cmd_train_instructx2x)

    convert = verbs.add_parser(
        "convert-ckpt", help="convert an original LDM .ckpt/.safetensors into a diffusers pipeline folder",
        description="Uses diffusers' single-file conversion with a local config folder (nothing is fetched).")
    convert.add_argument("checkpoint", metavar="CKPT", help="LDM checkpoint (.ckpt, .safetensors)")
    convert.add_argument("--config", required=True, metavar="DIR",
                         help="diffusers folder of the same architecture (configs + tokenizer; weights unused)")
    convert.add_argument("--out", required=True, metavar="DIR", help="new output folder")
    convert.add_argument("--weights", default="auto", choices=["auto", "ema", "raw"],
                         help="UNet weights: the EMA copy (auto: when present) or the raw ones")
    convert.add_argument("--allow-pickle", action="store_true",
                         help="allow Python objects in a .ckpt (only for trusted files)")
    convert.set_defaults(handler=cmd_convert_ckpt)


def _add_pair_options(parser: argparse.ArgumentParser) -> None:
    from cfbench.registration import MI_THRESHOLD

    parser.add_argument("--size", type=int, default=DEFAULT_RESOLUTION, metavar="PX", help="output image side")
    parser.add_argument("--no-register", action="store_true", help="skip the rigid registration of each pair")
    parser.add_argument("--mi-threshold", type=float, default=MI_THRESHOLD, metavar="MI",
                        help=f"discard pairs whose Mattes MI after registration is above this (default "
                             f"{MI_THRESHOLD}, the paper's; see DATASET_CARD.md for the calibration note)")
    parser.add_argument("--workers", type=int, default=1, metavar="N", help="worker processes (default 1)")
    parser.add_argument("--limit", type=int, metavar="N", help="only the first N pairs")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cfbench",
        description="Benchmark counterfactual chest X-ray generators: "
                    "split -> model.edit -> run folder -> evaluators -> metrics -> leaderboard.",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    demo = verbs.add_parser("demo", help="run the reference models on the embedded phantom demo split")
    demo.add_argument("--out", metavar="DIR", help="folder for the demo runs (default {runs_dir}/demo)")
    demo.add_argument("--resolution", type=int, default=DEFAULT_RESOLUTION, metavar="PX")
    demo.add_argument("--leaderboard", metavar="DIR",
                      help="folder for the demo's leaderboard: tables, plots, gallery (default {out}/leaderboard)")
    demo.add_argument("--no-leaderboard", action="store_true", help="skip writing the leaderboard")
    demo.set_defaults(handler=cmd_demo)

    board = verbs.add_parser(
        "leaderboard", help="tables (Markdown, CSV, LaTeX), plots and an HTML gallery from evaluated run folders",
        description="Write a leaderboard folder from evaluated run folders: the papers' table layouts "
                    "(InstructX2X, ProgEmu) with bootstrap intervals, run ids and the best value in bold, the "
                    "papers' reported values as marked rows, plots (PNG + PDF) and an HTML gallery. "
                    "With no run folders, writes only the papers' reported tables.")
    board.add_argument("runs", nargs="*", metavar="RUN_DIR", help="evaluated run folders (metrics.json present)")
    board.add_argument("--out", required=True, metavar="DIR", help="output folder, e.g. leaderboards/NAME")
    board.add_argument("--no-reported", action="store_true", help="leave out the papers' reported rows")
    board.add_argument("--bold-reported", action="store_true",
                       help="let reported rows compete for bold with measured rows (off by default: other test "
                            "sets, and the papers' KL scale is unpublished)")
    board.add_argument("--no-plots", action="store_true", help="skip the plots")
    board.add_argument("--no-gallery", action="store_true", help="skip the HTML gallery")
    board.add_argument("--gallery-samples", type=int, default=8, metavar="N", help="samples in the gallery (default 8)")
    board.add_argument("--thumbnail", type=int, default=192, metavar="PX", help="gallery thumbnail side (default 192)")
    board.add_argument("--title", help="title of the leaderboard (default: from the output folder name)")
    board.set_defaults(handler=cmd_leaderboard)

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
    _add_eval_arguments(evaluate)
    evaluate.set_defaults(handler=cmd_eval)

    compare = verbs.add_parser("compare", help="paired differences between two evaluated runs, with intervals")
    compare.add_argument("run_a", metavar="RUN_A")
    compare.add_argument("run_b", metavar="RUN_B")
    compare.add_argument("--out", metavar="FILE", help="also write the differences as JSON")
    _add_eval_arguments(compare)
    compare.set_defaults(handler=cmd_compare)

    models = verbs.add_parser("models", help="list registered models, their capabilities and weights")
    models.add_argument("--json", action="store_true", help="machine-readable output")
    models.set_defaults(handler=cmd_models)

    weights_parser = verbs.add_parser(
        "weights", help="list every weights file the evaluators need (path, size, SHA-256, present), or fetch them")
    weights_parser.add_argument("action", nargs="?", choices=["list", "fetch"], default="list")
    weights_parser.add_argument("keys", nargs="*", metavar="KEY", help="catalogue keys to fetch (default: the defaults)")
    weights_parser.add_argument("--all", action="store_true", help="include optional files")
    weights_parser.add_argument("--force", action="store_true", help="fetch again even if present")
    weights_parser.add_argument("--json", action="store_true", help="machine-readable listing")
    weights_parser.add_argument("--cache-dir", metavar="DIR", help="DenseNet cache folder (default torchxrayvision's)")
    weights_parser.set_defaults(handler=cmd_weights)

    conf = verbs.add_parser("config", help="show settings and their sources, or `config set KEY VALUE`")
    conf.add_argument("action", nargs="?", choices=["show", "set"], default="show")
    conf.add_argument("key", nargs="?", choices=sorted(config.SETTINGS))
    conf.add_argument("value", nargs="?")
    conf.set_defaults(handler=cmd_config)

    phantom_verb = verbs.add_parser("phantom", help="phantom-suite tools")
    phantom_verbs = phantom_verb.add_subparsers(dest="phantom_verb", required=True, metavar="JOB")
    train = phantom_verbs.add_parser(
        "train-evaluators", help="train the phantom evaluator CNNs (findings, group, sex, age) on rendered phantoms")
    train.add_argument("--out", required=True, metavar="DIR", help="folder for the weights and the held-out scores")
    train.add_argument("--n-train", type=int, default=7000)
    train.add_argument("--n-val", type=int, default=1000)
    train.add_argument("--epochs", type=int, default=6)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--render-size", type=int, default=256, metavar="PX")
    train.add_argument("--workers", type=int, default=2, help="rendering processes")
    train.set_defaults(handler=cmd_phantom_train)

    masks_verb = verbs.add_parser("masks", help="pseudo masks: per finding, the union of expert boxes")
    masks_verbs = masks_verb.add_subparsers(dest="masks_verb", required=True, metavar="JOB")
    masks_build = masks_verbs.add_parser("build", help="build pseudo masks from MS-CXR (or NIH, the default)")
    masks_build.add_argument("--ms-cxr", metavar="CSV", help="MS_CXR_Local_Alignment_v1.1.0.csv")
    masks_build.add_argument("--metadata", metavar="CSV", help="mimic-cxr-2.0.0-metadata.csv(.gz), for PA views")
    masks_build.add_argument("--out", required=True, metavar="FILE", help="output .npz")
    masks_build.add_argument("--size", type=int, default=DEFAULT_RESOLUTION, metavar="PX")
    masks_build.set_defaults(handler=cmd_masks_build)

    data = verbs.add_parser("data", help="build datasets")
    data_verbs = data.add_subparsers(dest="data_verb", required=True, metavar="KIND")
    phantom = data_verbs.add_parser("phantom", help="write a phantom dataset with splits train/holdout/test/val")
    phantom.add_argument("--n", type=int, default=600, help="number of pairs (default 600)")
    phantom.add_argument("--out", required=True, metavar="DIR")
    phantom.add_argument("--seed", type=int, default=0)
    phantom.add_argument("--size", type=int, default=DEFAULT_RESOLUTION, metavar="PX")
    phantom.set_defaults(handler=cmd_data_phantom)
    build = data_verbs.add_parser("build", help="build an edit dataset from a public or credentialed release")
    sources = build.add_subparsers(dest="source", required=True, metavar="SOURCE")
    nih = sources.add_parser("nih", help="NIH ChestX-ray14: consecutive PA pairs with different labels (public)")
    nih.add_argument("--images", required=True, metavar="DIR", help="folder with the NIH images (*.png)")
    nih.add_argument("--out", required=True, metavar="DIR")
    nih.add_argument("--data-entry", metavar="CSV",
                     help="Data_Entry_2017_v2020.csv(.gz); default: the copy inside torchxrayvision")
    _add_pair_options(nih)
    nih.set_defaults(handler=cmd_data_build_nih)
    mimic = sources.add_parser(
        "mimic", help="MIMIC-EDIT-INSTRUCTION from PhysioNet downloads (credentialed)",
        description="Rebuild MIMIC-EDIT-INSTRUCTION: Diff-VQA difference answers -> instructions; PA images of "
                    "both studies, ordered by StudyDate/StudyTime; resized, registered (SimpleITK, Mattes MI); "
                    "CheXpert labels of the later study; age, sex, race; p19 -> holdout. Resumable: run the same "
                    "command again to finish an interrupted build. Writes DATASET_CARD.md with Table-1 statistics.")
    mimic.add_argument("--mimic-cxr", required=True, metavar="DIR",
                       help="MIMIC-CXR-JPG root (files/ and mimic-cxr-2.0.0-{metadata,split,chexpert}.csv.gz)")
    mimic.add_argument("--diff-vqa", required=True, metavar="CSV", help="Medical-Diff-VQA mimic_pair_questions.csv")
    mimic.add_argument("--mimic-iv", required=True, metavar="DIR",
                       help="MIMIC-IV folder with patients.csv.gz and admissions.csv.gz (or its hosp/ or core/)")
    mimic.add_argument("--ms-cxr", metavar="CSV",
                       help="MS_CXR_Local_Alignment_v1.1.0.csv: also write OUT/pseudo_masks.npz")
    mimic.add_argument("--reports", metavar="DIR",
                       help="MIMIC-CXR reports root (files/p1x/p.../s....txt): the later study's impression becomes "
                            "target_report, the prompt of text-to-image baselines")
    mimic.add_argument("--out", required=True, metavar="DIR")
    _add_pair_options(mimic)
    mimic.set_defaults(handler=cmd_data_build_mimic)
    icg = sources.add_parser("icg", help="ICG-CXR (ProgEmu): pair folders with JSON, prior and follow-up images")
    icg.add_argument("--root", required=True, metavar="DIR", help="folder holding one sub-folder per pair")
    icg.add_argument("--out", required=True, metavar="DIR")
    icg.add_argument("--size", type=int, default=DEFAULT_RESOLUTION, metavar="PX")
    icg.set_defaults(handler=cmd_data_build_icg)
    _add_training_verbs(verbs)
    return parser


USER_ERRORS = (CliError, DatasetError, UnknownModelError, PluginError, WeightsNotFoundError, RunConfigMismatch,
               config.ConfigError, EvaluationError, FileNotFoundError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except USER_ERRORS as error:
        print(f"cfbench: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cfbench: interrupted; finished samples are kept, re-run the same command to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
