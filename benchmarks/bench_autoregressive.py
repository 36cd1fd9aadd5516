"""Tokens/s of cfbench's shared autoregressive loop against transformers' ``generate`` on the same model.

Both sample with top_p 0.92, top_k 0, temperature 1 (LLM-CXR's settings), KV cache on, the same prompts and
the same number of new tokens (no stop id), at each ``--batch-sizes`` entry. The two are interleaved
(ours, generate, ours, generate, ...) and each figure is the median of ``--repeats`` runs, so load changes on a
shared machine hit both alike. Printed: tokens/s of each and the ratio ours / generate (target: >= 1 at batch
1, > 1 at batch 8). generate draws from the global RNG; ours draws one number per sample per step from that
sample's own CPU generator.

The model is a random GPT-NeoX (``--hidden``, ``--layers``, ``--vocab``), not a release: the numbers show the
loop's overhead against transformers', not a real model's speed.

    python benchmarks/bench_autoregressive.py [--batch-sizes 1 8] [--new-tokens 128] [--device cpu] [--smoke]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from cfbench import autoregressive as ar
from conditions import parse_args, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=51305)  # LLM-CXR's 50281 + 1024 image tokens
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    args = parse_args(parser, smoke={"batch_sizes": [1, 2], "new_tokens": 4, "prompt_tokens": 8, "hidden": 64,
                                     "layers": 1, "vocab": 512, "repeats": 1})
    torch.set_num_threads(args.threads)
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(0)
    config = GPTNeoXConfig(vocab_size=args.vocab, hidden_size=args.hidden, num_hidden_layers=args.layers,
                           num_attention_heads=max(1, args.hidden // 64), intermediate_size=4 * args.hidden,
                           rotary_pct=0.25, max_position_embeddings=2048, pad_token_id=0)
    model = GPTNeoXForCausalLM(config).eval().to(args.device)
    settings = ar.SamplingSettings(top_p=0.92, top_k=0, max_new_tokens=args.new_tokens)
    print(f"GPT-NeoX hidden {args.hidden}, {args.layers} layers, vocab {args.vocab}; prompt {args.prompt_tokens}, "
          f"{args.new_tokens} new tokens, device {args.device}, {args.threads} thread(s)")
    print(f"{'batch':>5}  {'ours tok/s':>10}  {'generate tok/s':>14}  {'ratio':>6}")
    for batch in args.batch_sizes:
        prompts = torch.randint(1, args.vocab, (batch, args.prompt_tokens), generator=torch.Generator().manual_seed(1))

        def ours():
            ar.sample_tokens(model, prompts.tolist(), ar.cpu_generators(range(batch)), settings, pad_id=0)

        def generate():
            with torch.no_grad():
                model.generate(prompts.to(args.device), attention_mask=torch.ones_like(prompts).to(args.device),
                               do_sample=True, top_p=0.92, top_k=0, temperature=1.0, use_cache=True,
                               max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, pad_token_id=0)

        ours(), generate()  # warm-up
        times = {"ours": [], "generate": []}
        for _ in range(args.repeats):
            for name, function in (("ours", ours), ("generate", generate)):
                start = time.perf_counter()
                function()
                times[name].append(time.perf_counter() - start)
        rates = {name: batch * args.new_tokens / statistics.median(values) for name, values in times.items()}
        print(f"{batch:>5}  {rates['ours']:>10.1f}  {rates['generate']:>14.1f}  {rates['ours'] / rates['generate']:>6.2f}")
        report(f"batch{batch}_ratio", rates["ours"] / rates["generate"],
               f"autoregressive loop tokens/s, ours / transformers generate, batch {batch} ({args.device})", "x",
               ">= 1" if batch == 1 else "> 1")


if __name__ == "__main__":
    main()
