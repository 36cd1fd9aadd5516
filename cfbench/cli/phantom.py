"""The ``phantom`` verb group: tools of the phantom suite (training its evaluator)."""

from __future__ import annotations

import argparse
import json

from cfbench.cli.common import positive_int, progress, resolution_type


def cmd_phantom_train(args) -> int:
    from cfbench.phantom.evaluator_training import train_phantom_evaluators

    record = train_phantom_evaluators(args.out, n_train=args.n_train, n_val=args.n_val, epochs=args.epochs,
                                      seed=args.seed, resolution=args.resolution, workers=args.workers,
                                      progress=progress(args))
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


def cmd_phantom_pseudo_masks(args) -> int:
    from cfbench.phantom.pseudo_masks import phantom_pseudo_masks

    masks = phantom_pseudo_masks(args.n_pairs, args.resolution, progress=progress(args))
    masks.save(args.out)
    share = ", ".join(f"{name} {mask.mean():.0%}" for name, mask in sorted(masks.masks.items()))
    print(f"wrote {args.out}: per-finding unions of true lesion masks over {args.n_pairs} training pairs "
          f"(share of the image: {share})")
    return 0


def _parse_overrides(pairs: list[str] | None) -> dict:
    """``["dataset.n=24", "vae.render_resolutions=[128]"]`` -> {"dataset.n": 24, ...}; values are JSON, else strings."""
    overrides = {}
    for pair in pairs or []:
        key, separator, text = pair.partition("=")
        if not separator or "." not in key:
            raise argparse.ArgumentTypeError(f"--set expects SECTION.KEY=VALUE, got {pair!r}")
        try:
            overrides[key] = json.loads(text)
        except json.JSONDecodeError:
            overrides[key] = text
    return overrides


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="training folder (re-run the same command to resume)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N; picks the recipe's profile (default cpu)")
    parser.add_argument("--recipe", metavar="FILE", help="recipe JSON (default: cfbench/data/phantom_generator_recipe.json)")
    parser.add_argument("--steps-scale", type=float, default=1.0, metavar="X",
                        help="multiply the recipe's step counts (e.g. 0.01 for a smoke test)")
    parser.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", dest="overrides",
                        help="override one recipe value (JSON), e.g. --set dataset.n=24 --set dataset.resolution=64; repeatable")


def cmd_train_generator(args) -> int:
    from cfbench.training.phantom_generator import train_phantom_generator

    overrides = _parse_overrides(args.overrides)
    if args.init_from:
        overrides["instructx2x.init_from"] = str(args.init_from)
    record = train_phantom_generator(args.out, recipe=args.recipe, device=args.device, steps_scale=args.steps_scale,
                                     overrides=overrides, progress=progress(args))
    acceptance = record["vae"].get("acceptance") or {}
    x2x = record["instructx2x"]
    print(f"VAE: {record['vae'].get('steps_done')}/{record['vae'].get('steps')} steps; acceptance passed "
          f"{acceptance.get('passed')} (max |delta| {acceptance.get('max_abs_delta')})")
    print(f"InstructX2X: {x2x['steps_done']}/{x2x['steps']} steps ({x2x['total_steps']} in all); "
          f"last loss {x2x['loss_curve'].get('last')}")
    print(f"shipped: {args.out}/shipped ({record['shipped']['weights_megabytes']} MB of weights); "
          f"model card {args.out}/MODEL_CARD.md")
    return 0


def cmd_train_vae(args) -> int:
    from cfbench.training.phantom_generator import load_recipe, resolve_recipe, vae_config
    from cfbench.training.phantom_vae import train_phantom_vae

    overrides = _parse_overrides(args.overrides)
    if args.max_minutes is not None:
        overrides["vae.max_minutes"] = args.max_minutes
    if args.workers is not None:
        overrides["vae.workers"] = args.workers
    resolved = resolve_recipe(load_recipe(args.recipe), args.device, args.steps_scale, overrides)
    summary = train_phantom_vae(vae_config(resolved, args.out, progress=progress(args)))
    acceptance = summary["acceptance"]
    print(f"VAE: {summary['steps_done']}/{summary['steps']} steps (completed {summary['completed']}); "
          f"held-out PSNR {acceptance['psnr_db']:.2f} dB; acceptance passed {acceptance['passed']} "
          f"(max |delta| {acceptance['max_abs_delta']})")
    print(json.dumps(acceptance["delta"], indent=2))
    return 0


def add_verbs(verbs) -> None:
    """The ``phantom`` verb group."""
    phantom_verb = verbs.add_parser("phantom", help="phantom-suite tools")
    phantom_verbs = phantom_verb.add_subparsers(dest="phantom_verb", required=True, metavar="JOB")
    train = phantom_verbs.add_parser(
        "train-evaluators", help="train the phantom evaluator CNNs (findings, group, sex, age) on rendered phantoms")
    train.add_argument("--out", required=True, metavar="DIR", help="folder for the weights and the held-out scores")
    train.add_argument("--n-train", type=positive_int, default=7000, metavar="N", help="phantoms rendered for training")
    train.add_argument("--n-val", type=positive_int, default=1000, metavar="N",
                       help="held-out phantoms the reported AUROC / r are measured on")
    train.add_argument("--epochs", type=positive_int, default=6, metavar="E", help="passes over the training phantoms")
    train.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the phantoms and the training")
    train.add_argument("--resolution", type=resolution_type, default=256, metavar="PX",
                       help="side the phantoms are rendered at before the resize to the network input (default 256)")
    train.add_argument("--workers", type=positive_int, default=2, help="rendering processes")
    train.set_defaults(handler=cmd_phantom_train)

    masks = phantom_verbs.add_parser(
        "pseudo-masks", help="per finding, the union of the true lesion masks of the phantom training stream",
        description="The phantom analogue of MS-CXR pseudo masks (used by InstructX2X's RSE on phantom data). "
                    "cfbench ships the result as cfbench/data/phantom_pseudo_masks.npz and copies it into every "
                    "phantom dataset as pseudo_masks.npz.")
    masks.add_argument("--out", required=True, metavar="FILE", help="output .npz")
    masks.add_argument("--n-pairs", type=positive_int, default=300, metavar="N",
                       help="training pairs to take the union over (default %(default)s)")
    masks.add_argument("--resolution", type=resolution_type, default=128, metavar="PX",
                       help="mask side in pixels (default %(default)s; masks are resized to each dataset)")
    masks.set_defaults(handler=cmd_phantom_pseudo_masks)

    generator = phantom_verbs.add_parser(
        "train-generator", help="train the phantom InstructX2X generator end to end (resumable stages)",
        description="Render a phantom dataset, train the VAE, build the InstructPix2Pix base folder, train it with "
                    "cfbench's InstructX2X trainer and write OUT/shipped (float16 safetensors) with MODEL_CARD.md. "
                    "Run the same command again to resume.")
    _common(generator)
    generator.add_argument("--init-from", metavar="DIR",
                           help="warm start: continue from this trained phantom pipeline folder (e.g. "
                                "cfbench/data/phantom_instructx2x) with a fresh optimizer; skips the VAE stage "
                                "(its VAE and text side are kept); the model card counts the earlier steps")
    generator.set_defaults(handler=cmd_train_generator)
    vae = phantom_verbs.add_parser("train-vae", help="train the phantom VAE alone (resumable)")
    _common(vae)
    vae.add_argument("--max-minutes", type=float, help="wall-clock cap on training this session (0: none)")
    vae.add_argument("--workers", type=positive_int, help="rendering processes (default: the recipe profile's)")
    vae.set_defaults(handler=cmd_train_vae)
