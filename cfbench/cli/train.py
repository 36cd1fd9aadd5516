"""Verbs that train or convert generators: ``train instructx2x``, ``train biomedjourney`` (the same trainer with
the progression prompt and the two-stage curriculum) and ``convert-ckpt`` (``--format ldm``, ``emu3-vq``,
``cxr-irgen``)."""

from __future__ import annotations

from cfbench.api.model import DEFAULT_RESOLUTION
from cfbench.cli.common import CliError, non_negative_int, positive_int, progress, resolution_type
from cfbench.datasets.layout import SPLITS


def cmd_train_instructx2x(args) -> int:
    from cfbench.training.base_weights import BaseModelError
    from cfbench.training.instructx2x import TrainConfig, TrainingError, train_instructx2x

    train_config = TrainConfig(
        data_dir=args.data, base_model=args.base, output_dir=args.out, split=args.split,
        resolution=args.resolution, max_train_steps=args.steps, target_batch_size=args.target_batch_size,
        per_device_batch_size=args.batch_size, learning_rate=args.lr, lr_warmup_steps=args.warmup_steps,
        mixed_precision=args.mixed_precision, use_ema=not args.no_ema, ema_decay=args.ema_decay,
        rotation_degrees=args.rotation, center_crop_fraction=args.crop_fraction, hflip_probability=args.hflip,
        checkpoint_every=args.checkpoint_every, keep_checkpoints=args.keep_checkpoints, log_every=args.log_every,
        seed=args.seed, num_workers=args.workers, gradient_checkpointing=args.gradient_checkpointing,
        prompt_source=getattr(args, "prompt_source", "instruction"),
        report_pair_steps=_report_pair_steps(args),
    )
    try:
        summary = train_instructx2x(train_config, progress=progress(args))
    except (TrainingError, BaseModelError) as error:
        raise CliError(str(error)) from error
    if summary:  # the main process
        print(f"trained {summary['steps_this_session']} step(s) (resumed from step {summary['resumed_from_step']}), "
              f"last loss {summary['last_loss']}; pipeline with {summary['exported_weights']} weights in {args.out}")
    return 0


def _report_pair_steps(args) -> int:
    """BiomedJourney's stage-1 length: the flag, else half of the steps; 0 for InstructX2X."""
    given = getattr(args, "report_pair_steps", None)
    if given is None:
        return args.steps // 2 if args.train_verb == "biomedjourney" else 0
    return given


def cmd_convert_ckpt(args) -> int:
    if args.format == "emu3-vq":
        return convert_emu3_vq(args)
    if args.format == "cxr-irgen":
        return convert_cxr_irgen(args)
    if not args.config:
        raise CliError("--config DIR is required with --format ldm")
    from cfbench.training.ldm_convert import LdmCheckpointError, convert_ldm_checkpoint

    try:
        summary = convert_ldm_checkpoint(args.checkpoint, args.config, args.out, weights=args.weights,
                                         allow_pickle=args.allow_pickle)
    except LdmCheckpointError as error:
        raise CliError(str(error)) from error
    print(f"wrote {summary['pipeline']} ({summary['unet_weights']} UNet weights, UNet in_channels "
          f"{summary['unet_in_channels']}) to {summary['out']}")
    return 0


def _add_training_arguments(parser) -> None:
    """The arguments every InstructPix2Pix-style trainer takes (one trainer, one set of flags)."""
    parser.add_argument("--data", required=True, metavar="DIR", help="dataset folder (instructions.csv, past/, current/)")
    parser.add_argument("--base", required=True, metavar="PATH",
                     help="InstructPix2Pix or Stable Diffusion diffusers folder (conv_in is widened for SD)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output folder: checkpoints/, logs, and at the end the trained pipeline folder")
    parser.add_argument("--split", default="train", choices=SPLITS, help="dataset split to train on")
    parser.add_argument("--resolution", type=resolution_type, default=DEFAULT_RESOLUTION, metavar="PX",
                        help=f"training image side in pixels (default {DEFAULT_RESOLUTION})")
    parser.add_argument("--steps", type=positive_int, default=6500, help="optimizer steps (default 6500)")
    parser.add_argument("--target-batch-size", type=int, default=576, metavar="N",
                     help="effective batch per optimizer step (default 576); must be a multiple of "
                          "--batch-size x processes, the quotient is the gradient accumulation")
    parser.add_argument("--batch-size", type=positive_int, default=4, metavar="B", help="per-device micro-batch (default 4)")
    parser.add_argument("--lr", type=float, default=1e-4, help="learning rate (default 1e-4)")
    parser.add_argument("--warmup-steps", type=int, default=0, metavar="N",
                        help="optimizer steps of linear learning-rate warm-up")
    parser.add_argument("--mixed-precision", default="no", choices=["no", "fp16", "bf16"],
                        help="accelerate's mixed precision (no: float32)")
    parser.add_argument("--no-ema", action="store_true", help="export the raw weights, keep no EMA")
    parser.add_argument("--ema-decay", type=float, default=0.9999, metavar="D",
                        help="decay of the exponential moving average of the UNet weights")
    parser.add_argument("--rotation", type=float, default=2.0, metavar="DEG", help="max rotation (default 2)")
    parser.add_argument("--crop-fraction", type=float, default=1.0, metavar="F",
                        help="centre crop side as a fraction of the image (default 1.0: none)")
    parser.add_argument("--hflip", type=float, default=0.5, metavar="P",
                        help="horizontal flip probability; left/right words are swapped (default 0.5)")
    parser.add_argument("--checkpoint-every", type=int, default=500, metavar="K",
                        help="write a resumable checkpoint every K optimizer steps")
    parser.add_argument("--keep-checkpoints", type=int, default=2, metavar="N",
                        help="how many of the newest checkpoints to keep")
    parser.add_argument("--log-every", type=int, default=10, metavar="K",
                        help="append loss, lr and speed to train_log.jsonl every K optimizer steps")
    parser.add_argument("--seed", type=int, default=0, metavar="S",
                        help="run seed: sample order, augmentation, noise, timesteps and dropout derive from it")
    parser.add_argument("--workers", type=non_negative_int, default=2, metavar="N", help="data-loading processes (default 2)")
    parser.add_argument("--gradient-checkpointing", action="store_true",
                        help="recompute UNet activations in the backward pass: less memory, about 30%% slower")


def convert_emu3_vq(args) -> int:
    """BAAI Emu3 vision-tokenizer folder -> transformers ``Emu3VQVAE`` folder (ProgEmu's VQ)."""
    from pathlib import Path

    from cfbench.autoregressive.emu3_vq import convert_emu3_vq_folder

    source = Path(args.checkpoint)
    if not (source / "config.json").is_file():
        raise CliError(f"{source} is not an Emu3 vision-tokenizer folder (no config.json)")
    if Path(args.out).exists() and any(Path(args.out).iterdir()):
        raise CliError(f"{args.out} exists and is not empty")
    print(f"wrote transformers Emu3VQVAE folder {convert_emu3_vq_folder(source, args.out)}")
    return 0


def convert_cxr_irgen(args) -> int:
    """CXR-IRGen's Lightning checkpoints + local SD-1.4 / CLIP / BART folders -> the ``cxr-irgen`` folder."""
    if not args.config or not args.clip_vision:
        raise CliError("--format cxr-irgen needs --config DIR (CompVis/stable-diffusion-v1-4) and --clip-vision DIR "
                       "(openai/clip-vit-base-patch32)")
    if (args.lm_ckpt or args.bart) and not args.report_ckpt:
        raise CliError("--lm-ckpt and --bart belong to the report head: give --report-ckpt (the prior checkpoint) too")
    from cfbench.training.cxr_irgen_convert import CxrIrgenCheckpointError, convert_cxr_irgen as convert
    from cfbench.training.ldm_convert import LdmCheckpointError

    try:
        summary = convert(args.checkpoint, args.config, args.clip_vision, args.out, report_checkpoint=args.report_ckpt,
                          lm_checkpoint=args.lm_ckpt, bart=args.bart, allow_pickle=args.allow_pickle)
    except (CxrIrgenCheckpointError, LdmCheckpointError) as error:
        raise CliError(str(error)) from error
    head = ("with the report head" if summary["report_head"]
            else "without a report head (run with --option report=false)")
    print(f"wrote the cxr-irgen folder {summary['out']} {head}")
    return 0


def add_verbs(verbs) -> None:
    """The ``train`` verb group and ``convert-ckpt``."""
    train = verbs.add_parser("train", help="train generators on an edit dataset")
    train_verbs = train.add_subparsers(dest="train_verb", required=True, metavar="MODEL")
    x2x = train_verbs.add_parser(
        "instructx2x", help="fine-tune an InstructPix2Pix UNet (accelerate; resumes from the last checkpoint)",
        description="Fine-tune InstructX2X from an InstructPix2Pix or Stable Diffusion diffusers folder. "
                    "Multi-GPU: accelerate launch -m cfbench.cli train instructx2x ... Re-run the same "
                    "command to resume; OUT ends as a StableDiffusionInstructPix2PixPipeline folder (EMA weights).")
    _add_training_arguments(x2x)
    x2x.set_defaults(handler=cmd_train_instructx2x)
    journey = train_verbs.add_parser(
        "biomedjourney", help="train BiomedJourney: InstructPix2Pix on progression prompts, two-stage curriculum",
        description="The InstructX2X trainer with BiomedJourney's setup: stage 1 (the first --report-pair-steps "
                    "steps) on single image-report pairs with a dummy black prior image, stage 2 on (prior, "
                    "progression description, follow-up) triples. Re-run the same command to resume; OUT ends "
                    "as a folder `cfbench run --model biomedjourney --model-path OUT` loads.")
    _add_training_arguments(journey)
    journey.add_argument("--prompt-source", default="progression", choices=["progression", "instruction"],
                         help="text of the triples: the progression description (default; the instruction "
                              "where a sample has none) or the instruction")
    journey.add_argument("--report-pair-steps", type=int, default=None, metavar="K",
                         help="optimizer steps of stage 1 (image-report pairs; default: half of --steps)")
    journey.set_defaults(handler=cmd_train_instructx2x)

    convert = verbs.add_parser(
        "convert-ckpt", help="convert an original LDM .ckpt/.safetensors into a diffusers pipeline folder",
        description="Uses diffusers' single-file conversion with a local config folder (nothing is fetched).")
    convert.add_argument("checkpoint", metavar="CKPT",
                         help="LDM checkpoint (.ckpt, .safetensors); with --format emu3-vq: the BAAI folder; with "
                              "--format cxr-irgen: the diffusion Lightning checkpoint")
    convert.add_argument("--format", default="ldm", choices=["ldm", "emu3-vq", "cxr-irgen"],
                         help="ldm: LDM checkpoint -> diffusers folder; emu3-vq: BAAI Emu3-VisionTokenizer "
                              "folder -> transformers Emu3VQVAE folder (ProgEmu's vision_tokenizer/); cxr-irgen: "
                              "CXR-IRGen's diffusion Lightning checkpoint (unet.*, vae.*, text_encoder.*) -> the "
                              "cxr-irgen folder (with --clip-vision, and --report-ckpt/--lm-ckpt/--bart for reports)")
    convert.add_argument("--config", metavar="DIR",
                         help="(ldm, cxr-irgen) diffusers folder of the same architecture (configs + tokenizer; "
                              "weights unused); cxr-irgen: CompVis/stable-diffusion-v1-4")
    convert.add_argument("--clip-vision", metavar="DIR",
                         help="(cxr-irgen) local openai/clip-vit-base-patch32 folder (the reference-image encoder)")
    convert.add_argument("--report-ckpt", metavar="CKPT",
                         help="(cxr-irgen) the prior-model Lightning checkpoint (prior_model.*: the report ViT)")
    convert.add_argument("--lm-ckpt", metavar="CKPT",
                         help="(cxr-irgen) the BART LM Lightning checkpoint (model.*); default: the prior "
                              "checkpoint's language_model.*")
    convert.add_argument("--bart", metavar="DIR",
                         help="(cxr-irgen) local facebook/bart-base folder (config and tokenizer)")
    convert.add_argument("--out", required=True, metavar="DIR", help="new output folder")
    convert.add_argument("--weights", default="auto", choices=["auto", "ema", "raw"],
                         help="UNet weights: the EMA copy (auto: when present) or the raw ones")
    convert.add_argument("--allow-pickle", action="store_true",
                         help="allow Python objects in a .ckpt (only for trusted files)")
    convert.set_defaults(handler=cmd_convert_ckpt)
