#!/bin/sh
# Device check for issue 14: the adapter tests on CUDA-capable torch (CPU path) plus the loop on the GPU
# (bf16 tiny ProgEmu edit, batch = one by one) and the tokens/s benchmark on the GPU.
set -x
python -c "import tiktoken" 2>/dev/null || pip install -q tiktoken
python - <<'PY'
import numpy as np, torch, tempfile
from tests.helpers.tiny_autoregressive import save_tiny_progemu, save_tiny_llm_cxr
from cfbench.api.model import EditRequest, LoadContext
from cfbench.api.registry import get_model_class
d = tempfile.mkdtemp()
reqs = [EditRequest(sample_id=f"s{i}", image=np.random.default_rng(i).random((32, 32), dtype=np.float32),
                    instruction="worse", target_report="effusion", seed=i) for i in range(4)]
for name, folder, opts in (("progemu", save_tiny_progemu(d + "/p"), {"native_resolution": "32"}),
                           ("llm-cxr", save_tiny_llm_cxr(d + "/l"), {})):
    m = get_model_class(name).load(LoadContext(model_path=folder, device="cuda", options=opts))
    print(name, "dtype", next(m.lm.parameters()).dtype)
    b = m.edit(reqs); one = [m.edit([r])[0] for r in reqs]
    print(name, "batch vs one max diff", max(float(np.abs(x.image - y.image).max()) for x, y in zip(b, one)))
    mc = get_model_class(name).load(LoadContext(model_path=folder, device="cpu", options={**opts, "precision": "fp32"}))
    mg = get_model_class(name).load(LoadContext(model_path=folder, device="cuda", options={**opts, "precision": "fp32"}))
    c, g = mc.edit(reqs), mg.edit(reqs)
    print(name, "cpu fp32 vs cuda fp32 max diff", max(float(np.abs(x.image - y.image).max()) for x, y in zip(c, g)))
PY
python benchmarks/bench_autoregressive.py --device cuda --batch-sizes 1 8 --new-tokens 128 --repeats 3
python benchmarks/bench_autoregressive.py --device cpu --batch-sizes 1 8 --new-tokens 64 --repeats 2 --threads 4
