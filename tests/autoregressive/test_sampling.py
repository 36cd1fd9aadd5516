"""The shared autoregressive loop on a tiny GPT-NeoX: greedy equals transformers' generate (KV cache, left
padding, positions), seeds decide, batches do not, filters equal transformers' warpers, grammars hold."""

import pytest
import torch

from cfbench import autoregressive as ar

pytestmark = pytest.mark.usefixtures("one_torch_thread")
VOCAB = 97


@pytest.fixture(scope="module")
def tiny_lm():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(0)
    config = GPTNeoXConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=64, rotary_pct=0.25, max_position_embeddings=256, pad_token_id=0)
    return GPTNeoXForCausalLM(config).eval()


PROMPTS = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15, 16], [17]]


def test_greedy_equals_transformers_generate_with_left_padding(tiny_lm):
    settings = ar.SamplingSettings(top_k=1, max_new_tokens=12, stop_ids=(tiny_lm.config.eos_token_id,))
    ours = ar.sample_tokens(tiny_lm, PROMPTS, ar.cpu_generators([0] * 4), settings, pad_id=0)
    for prompt, tokens in zip(PROMPTS, ours):
        reference = tiny_lm.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False, pad_token_id=0)
        assert tokens == reference[0, len(prompt):].tolist()


def test_seeds_decide_and_the_batch_does_not(tiny_lm):
    settings = ar.SamplingSettings(top_p=0.92, max_new_tokens=20)
    seeds = [3, 4, 5, 3]
    torch.manual_seed(123)
    batched = ar.sample_tokens(tiny_lm, PROMPTS, ar.cpu_generators(seeds), settings, pad_id=0)
    torch.manual_seed(999)  # the global RNG plays no part
    alone = [ar.sample_tokens(tiny_lm, [p], ar.cpu_generators([s]), settings, pad_id=0)[0]
             for p, s in zip(PROMPTS, seeds)]
    assert batched == alone
    again = ar.sample_tokens(tiny_lm, PROMPTS[:1], ar.cpu_generators([3]), settings, pad_id=0)[0]
    other = ar.sample_tokens(tiny_lm, PROMPTS[:1], ar.cpu_generators([4]), settings, pad_id=0)[0]
    assert again == batched[0] and other != again


def test_filters_equal_transformers_warpers():
    from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(1))
    for top_k, top_p in ((5, 1.0), (0, 0.5), (0, 0.92), (10, 0.8)):
        ours = ar.filter_logits(logits, ar.SamplingSettings(top_k=top_k, top_p=top_p))
        reference = logits.clone()
        if top_k:
            reference = TopKLogitsWarper(top_k)(None, reference)
        if top_p < 1:
            reference = TopPLogitsWarper(top_p)(None, reference)
        assert torch.equal(torch.isinf(ours), torch.isinf(reference)), (top_k, top_p)


def test_draw_follows_the_distribution():
    logits = torch.log(torch.tensor([[0.2, 0.0, 0.5, 0.3]]))
    uniforms = torch.rand(4000, generator=torch.Generator().manual_seed(0))
    tokens = torch.cat([ar.draw(logits, u[None]) for u in uniforms])
    counts = torch.bincount(tokens, minlength=4).float() / len(tokens)
    assert counts[1] == 0 and torch.allclose(counts, torch.tensor([0.2, 0.0, 0.5, 0.3]), atol=0.03)


def test_a_grammar_yields_a_well_formed_grid_for_random_weights(tiny_lm):
    image = ar.id_set(range(60, 90))
    text = ar.id_set(range(4, 40))
    grammar = lambda: ar.GrammarConstraint(  # noqa: E731
        ar.image_grid(image, 3, 4, row_end=95) + ar.forced([96, 2]), ar.TextTail(text, 3, 2, 6))
    settings = ar.SamplingSettings(max_new_tokens=grammar().max_length, stop_ids=(3,))
    outputs = ar.sample_tokens(tiny_lm, PROMPTS * 3, ar.cpu_generators(range(12)), settings, pad_id=0,
                               constraints=[grammar() for _ in range(12)])
    for tokens in outputs:
        rows = [tokens[r * 5:(r + 1) * 5] for r in range(3)]
        assert all(all(60 <= t < 90 for t in row[:4]) and row[4] == 95 for row in rows)
        assert tokens[15:17] == [96, 2] and tokens[-1] == 3 and 3 <= len(tokens) - 17 <= 7
        assert all(4 <= t < 40 for t in tokens[17:-1])


def test_guidance_and_retries(tiny_lm):
    settings = ar.SamplingSettings(max_new_tokens=8, guidance_scale=3.0)
    guided = ar.sample_tokens(tiny_lm, PROMPTS, ar.cpu_generators([1] * 4), settings, pad_id=0,
                              negative_prompts=[[1]] * 4)
    plain = ar.sample_tokens(tiny_lm, PROMPTS, ar.cpu_generators([1] * 4), ar.SamplingSettings(max_new_tokens=8),
                             pad_id=0)
    assert guided != plain and all(len(tokens) == 8 for tokens in guided)
    with pytest.raises(ValueError, match="negative prompt"):
        ar.sample_tokens(tiny_lm, PROMPTS, ar.cpu_generators([1] * 4), settings, pad_id=0)

    calls = []

    def run(indices, seeds):
        calls.append(list(indices))
        return [[seed % 2] for seed in seeds]

    outputs, attempts = ar.sample_with_retries(run, [10, 11, 12], lambda tokens: tokens == [0], max_retries=5)
    assert calls[0] == [0, 1, 2] and all(call == [1] for call in calls[1:])  # only the invalid one is redone
    assert len(calls) <= 6 and all(a <= 5 for a in attempts)
    assert outputs[0] == [0] and outputs[2] == [0] and attempts[0] == attempts[2] == 0
