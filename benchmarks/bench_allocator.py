"""The heap policy (cfbench.core.allocator) on CPU forwards: keep-freed against glibc's defaults.

Each measurement runs in a fresh process (the policy is process-wide and a heap's history matters), the two
policies alternate over ``--repeats`` rounds, and medians are reported with the ratio system / keep-freed
(> 1: keep-freed is faster) and each process's own peak resident size (VmHWM):

1. the torchxrayvision DenseNet-121 (random weights, the protocol's pathology network) on batches of 16
   images at 224 px, what ``cfbench eval`` runs on real data;
2. the shipped phantom InstructX2X UNet (cfbench/data/phantom_instructx2x) on a batch of 8 latents at
   32 x 32, with both classifier-free guidance branches (24 rows), what ``cfbench demo`` runs per step.

    python benchmarks/bench_allocator.py [--repeats 3] [--calls 6] [--workloads densenet unet] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np
from conditions import parse_args, report

CHILD = r"""
import json, sys, time
import torch
from cfbench.core.allocator import apply_allocator_policy

policy, workload, calls = sys.argv[1], sys.argv[2], int(sys.argv[3])
apply_allocator_policy(policy)
torch.manual_seed(0)
if workload == "densenet":
    import torchxrayvision as xrv
    model = xrv.models.DenseNet(weights=None, num_classes=18).eval()
    inputs = (torch.rand(16, 1, 224, 224) * 2048 - 1024,)
    run = lambda: model(*inputs)
else:
    from diffusers import UNet2DConditionModel
    from cfbench.core.config import PACKAGE_DATA_DIR
    model = UNet2DConditionModel.from_pretrained(PACKAGE_DATA_DIR / "phantom_instructx2x" / "unet",
                                                 torch_dtype=torch.float32).eval()
    width = model.config.cross_attention_dim
    inputs = (torch.randn(24, 8, 32, 32), torch.full((24,), 500), torch.randn(24, 64, width))
    run = lambda: model(*inputs).sample
with torch.inference_mode():
    run()  # warm-up
    started = time.perf_counter()
    for _ in range(calls):
        run()
    seconds = (time.perf_counter() - started) / calls
peak = int(next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1])
print(json.dumps({"seconds": seconds, "peak_mib": peak / 1024}))
"""


def measure(policy: str, workload: str, calls: int) -> dict:
    output = subprocess.run([sys.executable, "-c", CHILD, policy, workload, str(calls)], capture_output=True,
                            text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds per policy")
    parser.add_argument("--calls", type=int, default=6, help="timed forward calls per process")
    parser.add_argument("--workloads", nargs="+", choices=["densenet", "unet"], default=["densenet", "unet"])
    args = parse_args(parser, smoke={"repeats": 1, "calls": 1, "workloads": ["densenet"]})
    import torch

    print(f"heap policy on CPU forwards, {torch.get_num_threads()} torch threads, {args.repeats} interleaved rounds "
          f"of fresh processes (medians)")
    for workload, label in (("densenet", "DenseNet-121, batch 16 at 224 px"),
                            ("unet", "phantom InstructX2X UNet, 24 rows of 32 x 32 latents")):
        if workload not in args.workloads:
            continue
        results: dict[str, list[dict]] = {"system": [], "keep-freed": []}
        for _ in range(args.repeats):
            for policy in results:
                results[policy].append(measure(policy, workload, args.calls))
        median = {policy: {key: float(np.median([r[key] for r in runs])) for key in ("seconds", "peak_mib")}
                  for policy, runs in results.items()}
        ratios = [s["seconds"] / k["seconds"] for s, k in zip(results["system"], results["keep-freed"])]
        print(f"  {label}")
        for policy, values in median.items():
            print(f"    {policy:10s} {values['seconds'] * 1000:8.1f} ms per call   peak {values['peak_mib']:7.0f} MiB")
        peak_ratio = median['keep-freed']['peak_mib'] / median['system']['peak_mib']
        print(f"    system / keep-freed time: {np.median(ratios):.2f}x   peak memory keep-freed / system: "
              f"{peak_ratio:.3f}")
        report(f"{workload}_time_ratio", np.median(ratios), f"heap policy: {label}, time system / keep-freed", "x",
               "> 1")
        report(f"{workload}_peak_ratio", peak_ratio, f"heap policy: {label}, peak memory keep-freed / system", "x")


if __name__ == "__main__":
    main()
