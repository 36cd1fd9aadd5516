"""LLM-CXR and ProgEmu on tiny doubles saved in the releases' layouts (tests/helpers/tiny_autoregressive.py)."""

import json

import numpy as np
import pytest
import torch

from cfbench import WeightsNotFoundError
from cfbench.api.model import EditRequest, LoadContext
from cfbench.api.registry import get_model_class
from tests.helpers.tiny_autoregressive import save_tiny_llm_cxr, save_tiny_progemu

pytestmark = pytest.mark.usefixtures("one_torch_thread")
REPORT = "Small left pleural effusion."


@pytest.fixture(scope="module")
def llm_cxr_folder(tmp_path_factory):
    return save_tiny_llm_cxr(tmp_path_factory.mktemp("llm-cxr"))


@pytest.fixture(scope="module")
def progemu_folder(tmp_path_factory):
    return save_tiny_progemu(tmp_path_factory.mktemp("progemu"))


def requests(n=4, size=32):
    rng = np.random.default_rng(0)
    return [EditRequest(sample_id=f"s{i}", image=rng.random((size, size), dtype=np.float32),
                        instruction="Add the finding of small left pleural effusion", target_report=REPORT,
                        progression="The left effusion is expected to increase." if i % 2 else None, seed=10 + i)
            for i in range(n)]


def load(name, folder, **options):
    return get_model_class(name).load(LoadContext(model_path=folder, options={k: str(v) for k, v in options.items()}))


# ------------------------------------------------------------------------------------------------ LLM-CXR

def test_llm_cxr_prompt_offset_and_grid(llm_cxr_folder):
    from transformers import AutoTokenizer

    model = load("llm-cxr", llm_cxr_folder, sampling="constrained", instruction="first")
    tokenizer = AutoTokenizer.from_pretrained(llm_cxr_folder / "lm")
    assert model.image_offset == len(tokenizer) == tokenizer.vocab_size + 3  # 3 added special tokens
    hand = ("Below is an instruction that describes a task. Write a response that appropriately completes the "
            "request.\n\n### Instruction:\nGenerate a chest X-ray image that corresponds to the entered free-text "
            "radiology reports for the chest X-ray image.\n\nInput:\nSmall left pleural effusion.\n\n### Response:\n")
    ids = model.prompt_ids(requests(1)[0])
    assert ids == tokenizer(hand)["input_ids"] and ids[-1] == tokenizer.convert_tokens_to_ids("### Response:\n")
    results = model.edit(requests())
    assert all(r.info["image_tokens"] == 16 and r.info["attempts"] == 1 for r in results)
    assert all(r.image.shape == (32, 32) and r.image.dtype == np.float32 for r in results)
    with pytest.raises(ValueError, match="target_report"):
        model.edit([EditRequest(sample_id="x", image=np.zeros((32, 32), np.float32), instruction="i")])


def test_llm_cxr_batch_seed_and_unconstrained_retries(llm_cxr_folder):
    model = load("llm-cxr", llm_cxr_folder, sampling="constrained")
    batch = requests()
    together = model.edit(batch)
    for request, result in zip(batch, together):
        np.testing.assert_allclose(result.image, model.edit([request])[0].image, atol=1e-5)
    other = model.edit([EditRequest(**{**batch[0].__dict__, "seed": 99})])[0]
    assert np.abs(other.image - together[0].image).max() > 1e-3
    free = load("llm-cxr", llm_cxr_folder, max_new_tokens=20, max_retries=1)
    results = free.edit(batch[:2])
    assert all(r.info["attempts"] <= 2 and r.info["sampling"] == "rejection" for r in results)


def test_llm_cxr_instruction_is_one_of_the_release_phrasings_drawn_from_the_seed(llm_cxr_folder):
    from transformers import AutoTokenizer

    from cfbench.models.llm_cxr import INSTRUCTIONS, PROMPT, instruction_index

    tokenizer = AutoTokenizer.from_pretrained(llm_cxr_folder / "lm")
    assert len(INSTRUCTIONS) == len(set(INSTRUCTIONS)) == 10
    sampled, first = load("llm-cxr", llm_cxr_folder), load("llm-cxr", llm_cxr_folder, instruction="first")
    chosen = []
    for seed in range(30):
        request = EditRequest(**{**requests(1)[0].__dict__, "seed": seed})
        index = instruction_index(seed, "sampled")
        assert index == instruction_index(seed, "sampled")  # a function of the seed alone
        chosen.append(index)
        assert sampled.prompt_ids(request) == tokenizer(PROMPT.format(instruction=INSTRUCTIONS[index],
                                                                      report=REPORT))["input_ids"]
        assert first.prompt_ids(request) == tokenizer(PROMPT.format(instruction=INSTRUCTIONS[0],
                                                                    report=REPORT))["input_ids"]
    assert len(set(chosen)) >= 6


def test_rejection_sampling_stops_at_its_cap():
    """The release retries until 256 image tokens appear; cfbench stops after max_retries retries."""
    from cfbench.autoregressive.sampling import attempt_seed, sample_with_retries

    calls = []

    def never_valid(indices, seeds):
        calls.append(list(seeds))
        return [[1, 2, 3] for _ in indices]

    outputs, attempts = sample_with_retries(never_valid, [7, 8], lambda tokens: False, max_retries=4)
    assert len(calls) == 5 and attempts == [4, 4] and outputs == [[1, 2, 3]] * 2
    assert [seeds[0] for seeds in calls] == [attempt_seed(7, attempt) for attempt in range(5)]
    assert len({seeds[0] for seeds in calls}) == 5  # every retry draws anew


def test_llm_cxr_rejection_cap_is_recorded(llm_cxr_folder):
    """Fewer new tokens than the grid has cells: no attempt can succeed, every sample stops at the cap."""
    model = load("llm-cxr", llm_cxr_folder, max_new_tokens=5, max_retries=2)
    results = model.edit(requests(2))
    assert all(r.info["attempts"] == 3 and not r.info["complete"] for r in results)
    assert model.identity()["settings"]["max_retries"] == 2 and model.identity()["adapter_version"] == 2


def test_llm_cxr_released_output_is_matplotlibs_jpeg(llm_cxr_folder, tmp_path):
    """output=released equals decoding the grid, writing it with matplotlib's imsave as the release's
    decode_cxr_all.py does, and reading the JPEG back (channels averaged)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from cfbench.autoregressive.taming_vq import taming_decode_rgb

    model = load("llm-cxr", llm_cxr_folder, sampling="constrained")
    edit = EditRequest(**{**requests(1, size=model.grid * 4)[0].__dict__})  # the VQ's own size: no resize
    released = model.edit([edit])[0].image
    floating = load("llm-cxr", llm_cxr_folder, sampling="constrained", output="float").edit([edit])[0].image
    grid = torch.tensor(model.sample_grids([edit])[0], dtype=torch.long).view(-1, model.grid, model.grid)
    rgb = taming_decode_rgb(model.vq, grid)[0].permute(1, 2, 0).numpy()
    assert rgb.shape[:2] == edit.image.shape
    plt.imsave(tmp_path / "release.jpg", rgb)
    reference = np.asarray(Image.open(tmp_path / "release.jpg").convert("RGB"), dtype=np.float32).mean(axis=2) / 255
    np.testing.assert_allclose(released, reference, atol=1e-6)
    np.testing.assert_allclose(floating, rgb.mean(axis=2), atol=1e-6)
    assert 0 < np.abs(released - floating).max() < 0.25


def test_taming_round_trip_equals_the_vq_forward(llm_cxr_folder):
    from cfbench.autoregressive.taming_vq import load_taming_vqgan, taming_decode, taming_encode

    vq = load_taming_vqgan(next((llm_cxr_folder / "vqgan").glob("*.ckpt")),
                           next((llm_cxr_folder / "vqgan").glob("*.yaml")))
    images = torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(0))
    indices = taming_encode(vq, images)
    assert indices.shape == (2, 4, 4)
    with torch.no_grad():
        forward = vq(images[:, None].expand(-1, 3, -1, -1) * 2 - 1)[0]
    torch.testing.assert_close(taming_decode(vq, indices), ((forward.clamp(-1, 1) + 1) / 2).mean(1),
                               atol=1e-5, rtol=0)


def test_missing_parts_are_each_named(tmp_path):
    (tmp_path / "llm").mkdir()
    with pytest.raises(WeightsNotFoundError) as error:
        load("llm-cxr", tmp_path / "llm")
    assert len(error.value.missing) == 3 and "vqgan" in str(error.value) and "lm" in str(error.value)
    with pytest.raises(WeightsNotFoundError) as error:
        load("progemu", tmp_path / "llm")
    assert len(error.value.missing) == 4 and "emu3.tiktoken" in str(error.value)


# ------------------------------------------------------------------------------------------------ ProgEmu

def test_progemu_prompt_equals_the_release_string(progemu_folder):
    from cfbench.autoregressive.emu3_vq import emu3_encode

    model = load("progemu", progemu_folder, native_resolution=32)
    t = model.tokenizer
    assert (t.pad_id, t.eol_id, t.eof_id, t.bos_id, t.eos_id, t.img_id, t.boi_id, t.eoi_id, t.visual_first) == \
        (256, 459, 460, 462, 463, 464, 465, 466, 467)  # the release's layout shifted to 256 regular ids
    request = requests(2)[1]
    codes = emu3_encode(model.vq, torch.from_numpy(request.image)[None])[0]
    ids = model.prompt_ids(codes, model.progression_text(request))
    header = [465, ord("8"), ord("*"), ord("8"), 464]
    rows = [v for row in codes.tolist() for v in [467 + c for c in row] + [459]]
    text = list(request.progression.encode())
    assert ids == [462, *header, *rows, 460, 466, *text, *header]
    rows_text = "<|extra_200|>".join("".join(f"<|visual token {c:06d}|>" for c in row) for row in codes.tolist())
    release = ("<|extra_203|><|image start|>8*8<|image token|>" + rows_text + "<|extra_200|><|extra_201|>"
               "<|image end|>" + request.progression + "<|image start|>8*8<|image token|>")
    assert ids == t.encode_with_specials(release)
    assert model.progression_text(requests(1)[0]) == requests(1)[0].instruction  # no progression: instruction


def test_progemu_forces_eol_at_the_release_text_positions(progemu_folder):
    """The release's helper answers eol whenever offset % 65 == 0, also inside the interpretation: text
    tokens 63, 128 and 193 (1-based) of a 64 x 64 grid; text_eol=none leaves the text free."""
    from cfbench import autoregressive as ar
    from cfbench.models.progemu import release_text_eol_positions

    assert release_text_eol_positions(64, 198) == (62, 127, 192)
    first_text_offset = 65 * 64 + 3  # 4160 grid tokens, eof, eoi: the text starts at offset 4163
    assert all((first_text_offset + k) % 65 == 0 for k in (62, 127, 192))
    assert release_text_eol_positions(8, 30) == (6, 15, 24)  # the tiny model's 8 x 8 grid
    model = load("progemu", progemu_folder, native_resolution=32)
    t = model.tokenizer
    grammar = model.constraint()
    text = [5] * 30
    prefix = [0] * 74  # the fixed part's length: 8 rows of 9, eof, eoi
    assert [k for k in range(30) if grammar.allowed(prefix + text[:k]).tolist() == [t.eol_id]] == [6, 15, 24]
    free = load("progemu", progemu_folder, native_resolution=32, text_eol="none").constraint()
    assert all(t.eol_id not in free.allowed(prefix + text[:k]).tolist() for k in range(30))
    settings = ar.SamplingSettings(top_k=50, max_new_tokens=grammar.max_length, stop_ids=(t.eos_id,))
    prompt = model.prompt_ids(torch.zeros(8, 8, dtype=torch.long), "worse")
    outputs = ar.sample_tokens(model.lm, [prompt] * 4, ar.cpu_generators(range(4)), settings, pad_id=t.pad_id,
                               constraints=[model.constraint() for _ in range(4)])
    long = [tokens for tokens in outputs if len(tokens) > 74 + 7]
    assert long and all(tokens[80] == t.eol_id for tokens in long)
    codes, explanation = model.split_output(long[0])
    assert "<" not in explanation and len(codes) == 64


def test_progemu_padding_text_cleanup_and_negative_header(progemu_folder):
    from cfbench.models.progemu import release_text_cleanup

    model = load("progemu", progemu_folder, native_resolution=32)
    t = model.tokenizer
    short = [t.visual_first + 3, t.visual_first + 9, t.eol_id, t.eof_id, t.eoi_id]
    assert model.split_output(short)[0] == [3] + [9] * 63  # the release pads with the last code
    zero = load("progemu", progemu_folder, native_resolution=32, pad_codes="zero")
    assert zero.split_output(short)[0] == [3, 9] + [0] * 62
    assert model.split_output([t.eoi_id, t.eos_id])[0] is None  # no code: the release's black image
    words = t.encode("the effusion") + [t.eol_id] + t.encode(" grew")
    assert model.split_output([t.eoi_id, *words, t.eos_id])[1] == "the effusion grew"
    assert model.split_output([t.eoi_id, *t.encode("<b>abc"), t.eos_id])[1] == ""  # 3 characters left: dropped
    raw = load("progemu", progemu_folder, native_resolution=32, text_cleanup="none")
    assert raw.split_output([t.eoi_id, *t.encode("<b>abc"), t.eos_id])[1] == "<b>abc"
    assert release_text_cleanup("<|extra_200|> larger <x>effusion ") == "larger effusion"
    header = [t.boi_id, *t.encode("64*64"), t.img_id]
    assert model.negative_prompt_ids() == [t.bos_id, *header]  # the release's fixed "64*64" (grid 8 here)
    grid = load("progemu", progemu_folder, native_resolution=32, negative_header="grid")
    assert grid.negative_prompt_ids() == [t.bos_id, t.boi_id, *t.encode("8*8"), t.img_id]
    assert model.identity()["adapter_version"] == 2 and model.identity()["settings"]["text_eol"] == "release"


def test_progemu_grammar_batch_and_seeds(progemu_folder):
    from cfbench.models.progemu import release_text_eol_positions

    model = load("progemu", progemu_folder, native_resolution=32, top_k=50)
    batch = requests()
    together = model.edit(batch)
    assert all(isinstance(r.explanation, str) and r.image.shape == (32, 32) for r in together)
    for request, result in zip(batch, together):
        alone = model.edit([request])[0]
        np.testing.assert_allclose(result.image, alone.image, atol=1e-5)
        assert alone.explanation == result.explanation
    t = model.tokenizer
    from cfbench import autoregressive as ar

    prompt = model.prompt_ids(torch.zeros(8, 8, dtype=torch.long), "worse")
    grammar = model.constraint()
    settings = ar.SamplingSettings(top_k=50, max_new_tokens=grammar.max_length, stop_ids=(t.eos_id,))
    outputs = ar.sample_tokens(model.lm, [prompt] * 6, ar.cpu_generators(range(6)), settings, pad_id=t.pad_id,
                               constraints=[model.constraint() for _ in range(6)])
    for tokens in outputs:  # random weights, yet every grid is well formed
        assert all(tokens[r * 9 + 8] == t.eol_id for r in range(8))
        assert all(t.visual_first <= tokens[r * 9 + c] < t.visual_first + 64 for r in range(8) for c in range(8))
        assert tokens[72:74] == [t.eof_id, t.eoi_id] and tokens[-1] == t.eos_id
        forced = [74 + k for k in release_text_eol_positions(8, 198) if 74 + k < len(tokens) - 1]
        assert all(tokens[i] == t.eol_id for i in forced)  # the release's eol inside the text
        assert all(tok < 256 for i, tok in enumerate(tokens[74:-1], start=74) if i not in forced)
        assert 2 <= len(tokens) - 75 <= 198
    assert len({tuple(tokens) for tokens in outputs}) == 6
    guided = load("progemu", progemu_folder, native_resolution=32, cfg="true").edit(batch[:1])[0]
    assert np.abs(guided.image - together[0].image).max() > 1e-4


def test_emu3_vq_conversion_round_trip_and_attention(progemu_folder, tmp_path):
    from transformers import Emu3VQVAE

    from cfbench.autoregressive.emu3_vq import (baai_to_transformers, convert_emu3_vq_folder, emu3_decode,
                                                emu3_encode, load_emu3_vq, read_state_dict)
    from tests.helpers.tiny_autoregressive import save_tiny_emu3_vq_baai

    original = save_tiny_emu3_vq_baai(tmp_path / "baai")
    loaded = load_emu3_vq(tmp_path / "baai")
    converted = load_emu3_vq(convert_emu3_vq_folder(tmp_path / "baai", tmp_path / "hf"))
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == "emu3_vqgan"
    images = torch.rand(2, 32, 32, generator=torch.Generator().manual_seed(0))
    codes = emu3_encode(original, images)
    assert codes.shape == (2, 8, 8)
    for model in (loaded, converted):
        assert torch.equal(emu3_encode(model, images), codes)
        assert torch.equal(emu3_decode(model, codes), emu3_decode(original, codes))
    with torch.no_grad():  # round trip = the model's own encode -> decode
        own = original.decode(torch.stack(original.encode(images[:, None].expand(-1, 3, -1, -1) * 2 - 1,
                                                          torch.tensor([[32, 32]] * 2)).image_tokens))
    weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    torch.testing.assert_close(emu3_decode(original, codes), ((own.clamp(-1, 1) + 1) / 2 * weights).sum(1))

    # BAAI's attention (1x1 conv q/k/v, softmax(q^T k / sqrt(C)), proj_out, residual), written out here,
    # on the BAAI weights equals transformers' block on the converted ones
    baai = read_state_dict(tmp_path / "baai")
    x = torch.randn(1, 64, 8, 8)
    block = loaded.encoder.middle_block
    with torch.no_grad():
        h = torch.nn.functional.group_norm(x, 32, baai["encoder.mid.attn_1.norm.weight"],
                                           baai["encoder.mid.attn_1.norm.bias"], 1e-6)
        conv = lambda name, v: torch.nn.functional.conv2d(  # noqa: E731
            v, baai[f"encoder.mid.attn_1.{name}.weight"], baai[f"encoder.mid.attn_1.{name}.bias"])
        q, k, v = (conv(name, h).reshape(1, 64, 64) for name in "qkv")
        attention = torch.softmax(q.transpose(1, 2) @ k / 64 ** 0.5, dim=2)
        expected = x + conv("proj_out", (v @ attention.transpose(1, 2)).reshape(1, 64, 8, 8))
        normed = block.attn_norm(x).flatten(2).transpose(1, 2)
        ours = x + block.attn_1(normed)[0].transpose(1, 2).reshape(1, 64, 8, 8)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-4)
    assert set(baai_to_transformers(baai)) == set(Emu3VQVAE(loaded.config).state_dict())


def test_cli_run_end_to_end_with_explanations(progemu_folder, llm_cxr_folder, tmp_path):
    from cfbench.cli import main
    from tests.datasets.test_icg import write_pair

    for i in range(3):
        write_pair(tmp_path / "icg", f"pair-{i:04d}", [0.0] * 14, [1.0] + [0.0] * 13)
    assert main(["--quiet", "data", "build", "icg", "--root", str(tmp_path / "icg"), "--out",
                 str(tmp_path / "data"), "--resolution", "32"]) == 0
    out = tmp_path / "progemu-run"
    assert main(["--quiet", "run", "--model", "progemu", "--model-path", str(progemu_folder), "--split", "test",
                 "--data", str(tmp_path / "data"), "--resolution", "32", "--out", str(out), "--limit", "8",
                 "--option", "native_resolution=32", "--evaluator", "none", "--batch-size", "2"]) == 0
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and all(isinstance(line.get("explanation"), str) for line in lines)
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert all(metrics[name]["n"] == 3 for name in ("bleu3", "meteor", "rouge_l"))  # the ProgEmu text columns
    assert main(["--quiet", "run", "--model", "llm-cxr", "--model-path", str(llm_cxr_folder), "--split", "demo",
                 "--resolution", "32", "--out", str(tmp_path / "llm-run"), "--limit", "8", "--evaluator", "none",
                 "--option", "max_retries=1"]) == 0


def test_cli_converts_an_emu3_vision_tokenizer(tmp_path):
    from cfbench.autoregressive.emu3_vq import emu3_decode, load_emu3_vq
    from cfbench.cli import main
    from tests.helpers.tiny_autoregressive import save_tiny_emu3_vq_baai

    original = save_tiny_emu3_vq_baai(tmp_path / "baai")
    assert main(["--quiet", "convert-ckpt", str(tmp_path / "baai"), "--format", "emu3-vq", "--out",
                 str(tmp_path / "hf")]) == 0
    codes = torch.randint(0, 64, (1, 8, 8), generator=torch.Generator().manual_seed(0))
    assert torch.equal(emu3_decode(load_emu3_vq(tmp_path / "hf"), codes), emu3_decode(original, codes))
