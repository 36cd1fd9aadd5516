#!/usr/bin/env bash
# Train the phantom InstructX2X generator on one CUDA GPU (recipe profile "cuda": about 8 minutes on an H100)
# and copy the result into $OUT as at most 8 files, each under 16 MiB:
#
#   unet--diffusion_pytorch_model.safetensors, vae--diffusion_pytorch_model.safetensors,
#   text_encoder--model.safetensors   the float16 weights ("--" stands for "/" in the shipped folder)
#   phantom_generator_rest.tar        the rest of shipped/ (model_index.json, configs, tokenizer, scheduler,
#                                     model card) and the training records (recipe, configs, logs, summaries)
#   MODEL_CARD.md, train.log          the model card and this run's console output
#
# Reassemble the pipeline folder: mkdir DIR && tar -xf phantom_generator_rest.tar -C DIR &&
#   for f in *--*.safetensors; do cp "$f" "DIR/shipped/${f//--//}"; done      (then DIR/shipped is the model)
#
# Run from the repository root:  OUT=/some/dir bash benchmarks/gpu_train_phantom_generator.sh [extra train-generator options]
# (PYTHON=... picks the interpreter, DEVICE=cpu runs the same steps on the CPU profile, e.g. for a dry run with
# --steps-scale 0.001 and --set overrides.)
# Wheels in .whl/ (e.g. diffusers, where it is not installed) are installed into /tmp/site first. The stages
# are time-capped by the recipe (VAE 2 min, InstructX2X 4 min of training); a capped stage stops at a checkpoint
# and its result is exported as it is. Re-running with the same WORK folder resumes.
set -uo pipefail
: "${OUT:?set OUT to the folder that receives the results}"
cd "$(dirname "$0")/.." || exit 1
PYTHON=${PYTHON:-python3}
WORK=${WORK:-/tmp/phantom-generator}
DEVICE=${DEVICE:-cuda}
if compgen -G ".whl/*.whl" > /dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
# Without an installed cfbench, cfbench.models and cfbench.metrics (the top-level models/ and metrics/ folders,
# mapped by pyproject.toml's package-dir) are made importable from this checkout by links.
if ! "$PYTHON" -c "import cfbench.models, cfbench.metrics" 2>/dev/null; then
  ln -sfn ../models cfbench/models && ln -sfn ../metrics cfbench/metrics || exit 1
fi
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | tee "$OUT/train.log"
"$PYTHON" -c "import torch, diffusers, transformers; assert '$DEVICE' == 'cpu' or torch.cuda.is_available(), 'no CUDA'; \
print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)" \
  2>&1 | tee -a "$OUT/train.log" || exit 1
started=$(date +%s)
"$PYTHON" -m cfbench.cli --quiet phantom train-generator --device "$DEVICE" --out "$WORK" "$@" 2>&1 | tee -a "$OUT/train.log"
status=${PIPESTATUS[0]}
echo "train-generator exit status $status after $(( $(date +%s) - started )) s" | tee -a "$OUT/train.log"
if [ -d "$WORK/shipped" ]; then
  for component in unet vae text_encoder; do
    for file in "$WORK/shipped/$component"/*.safetensors; do
      cp "$file" "$OUT/${component}--$(basename "$file")"
    done
  done
  records=()
  for path in model_card.json MODEL_CARD.md recipe_resolved.json data/dataset.json \
              vae_training/vae_train_config.json vae_training/train_log.jsonl vae_training/train_summary.json \
              instructx2x/train_config.json instructx2x/train_log.jsonl instructx2x/train_summary.json; do
    [ -f "$WORK/$path" ] && records+=("$path")
  done
  tar -C "$WORK" -cf "$OUT/phantom_generator_rest.tar" --exclude='*.safetensors' shipped "${records[@]}"
  cp "$WORK/MODEL_CARD.md" "$OUT/" 2>/dev/null
fi
ls -la "$OUT" | tee -a "$OUT/train.log"
exit "$status"
