"""The phantom generator's text side: a CLIP tokenizer whose vocabulary holds every instruction word, and a
frozen, randomly initialised small CLIP text encoder.

The instruction grammar (:mod:`cfbench.findings`) has a closed vocabulary: the template words ("add the
finding of", "remove", "change the level of ... from ... to"), the finding names, the location and the level
words. :func:`instruction_words` collects them by rendering every operation the grammar can express with
the words :mod:`cfbench.findings` knows (the phantom's findings, locations and levels are a subset, and
``edit_augment``'s left/right swap stays inside it).

:func:`save_phantom_tokenizer` writes a byte-level BPE vocabulary in CLIP's format (``vocab.json``,
``merges.txt``) holding the start/end tokens, every printable ASCII character (alone and with the
end-of-word marker ``</w>``, so any ASCII text tokenises without an unknown token) and merges learned,
BPE-style, on the instruction words until each of them is one token. :func:`phantom_text_encoder` builds the
encoder from a seed; it is never trained (InstructX2X keeps the text encoder frozen), so what carries the
meaning is the token identity and position, which a random transformer preserves.
"""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from pathlib import Path

from cfbench.core.findings import FINDING_TO_CHEXPERT, LEVEL_WORDS, LOCATION_WORDS, Operation, render_operation
from cfbench.core.storage import atomic_write_text

START_TOKEN, END_TOKEN = "<|startoftext|>", "<|endoftext|>"
END_OF_WORD = "</w>"
PRINTABLE = [chr(code) for code in range(33, 127)]  # printable ASCII without the space
# CLIP's pre-tokeniser: words, numbers and punctuation runs (ASCII instructions only).
_WORD_PATTERN = re.compile(r"[a-z]+|[0-9]|[^\sa-z0-9]+")

DEFAULT_TEXT_CONFIG: dict = {
    "hidden_size": 128,  # also the UNet's cross_attention_dim
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_length": 64,  # tokens per prompt, start and end tokens included
    "seed": 0,
}


def instruction_words() -> list[str]:
    """Every lower-case word and punctuation run the instruction grammar can produce, sorted."""
    locations = [None, *LOCATION_WORDS]
    levels = list(LEVEL_WORDS)
    sentences = []
    for finding, location in itertools.product(FINDING_TO_CHEXPERT, locations):
        sentences.append(render_operation(Operation("remove", finding, location)))
        sentences.extend(render_operation(Operation("add", finding, location, None, level)) for level in [None, *levels])
        sentences.append(render_operation(Operation("change", finding, location, levels[0], levels[1])))
    words: set[str] = {"."}
    for sentence in sentences:
        words.update(pre_tokenize(sentence))
    return sorted(words)


def pre_tokenize(text: str) -> list[str]:
    """The words CLIP's tokenizer splits ASCII text into (lower-cased, whitespace dropped)."""
    return _WORD_PATTERN.findall(text.lower())


def _apply_merges(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """CLIP's BPE on one word: repeatedly merge the adjacent pair of lowest rank, all its occurrences."""
    while len(symbols) > 1:
        pairs = [(ranks.get(pair, len(ranks)), pair) for pair in zip(symbols, symbols[1:])]
        rank, best = min(pairs)
        if rank == len(ranks):
            break
        merged, index = [], 0
        while index < len(symbols):
            if index + 1 < len(symbols) and (symbols[index], symbols[index + 1]) == best:
                merged.append(symbols[index] + symbols[index + 1])
                index += 2
            else:
                merged.append(symbols[index])
                index += 1
        symbols = merged
    return symbols


def learn_merges(words: list[str]) -> list[tuple[str, str]]:
    """BPE merges, learned on ``words`` (each counted once) until every word is a single symbol.

    Each round segments all words with the merges so far (as the tokenizer will) and appends the most
    frequent adjacent pair among words still in pieces (ties: the alphabetically first pair), so the
    result is deterministic."""
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    while True:
        counts: Counter = Counter()
        for word in words:
            symbols = _apply_merges(list(word[:-1]) + [word[-1] + END_OF_WORD], ranks)
            counts.update(zip(symbols, symbols[1:]))
        if not counts:
            return merges
        best = min(counts, key=lambda pair: (-counts[pair], pair))
        ranks[best] = len(merges)
        merges.append(best)


def save_phantom_tokenizer(folder: str | Path, max_length: int = DEFAULT_TEXT_CONFIG["max_length"]):
    """Write the phantom CLIP tokenizer into ``folder`` and return it: ``vocab.json`` and ``merges.txt`` (CLIP's
    files, which every transformers version reads) plus what ``save_pretrained`` writes.

    max_length: the tokenizer's ``model_max_length`` (prompts are padded / truncated to it, in tokens)."""
    from transformers import CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    merges = learn_merges(instruction_words())
    tokens = [START_TOKEN, END_TOKEN, *PRINTABLE, *(c + END_OF_WORD for c in PRINTABLE)]
    tokens += [left + right for left, right in merges]
    vocab = {token: index for index, token in enumerate(dict.fromkeys(tokens))}
    atomic_write_text(folder / "vocab.json", json.dumps(vocab, ensure_ascii=True))
    atomic_write_text(folder / "merges.txt", "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=max_length,
                              unk_token=END_TOKEN, bos_token=START_TOKEN, eos_token=END_TOKEN, pad_token=END_TOKEN)
    tokenizer.save_pretrained(folder)  # tokenizer_config.json (and tokenizer.json where transformers writes one)
    return tokenizer


def phantom_text_encoder(tokenizer, hidden_size: int = 128, intermediate_size: int = 256,
                         num_hidden_layers: int = 2, num_attention_heads: int = 4, seed: int = 0):
    """A randomly initialised ``CLIPTextModel`` for ``tokenizer`` (vocabulary and maximum length), float32,
    in eval mode with gradients off. Weights depend only on the arguments (torch's CPU generator is seeded
    with ``seed`` and restored afterwards)."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
        max_position_embeddings=tokenizer.model_max_length, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPTextModel(config)
    return model.eval().requires_grad_(False)


def save_phantom_text_side(folder: str | Path, config: dict | None = None) -> tuple[Path, Path]:
    """Write ``folder/tokenizer`` and ``folder/text_encoder`` (safetensors) from ``config`` (keys of
    :data:`DEFAULT_TEXT_CONFIG`); returns the two folders."""
    settings = {**DEFAULT_TEXT_CONFIG, **(config or {})}
    folder = Path(folder)
    tokenizer = save_phantom_tokenizer(folder / "tokenizer", settings["max_length"])
    encoder = phantom_text_encoder(tokenizer, settings["hidden_size"], settings["intermediate_size"],
                                   settings["num_hidden_layers"], settings["num_attention_heads"], settings["seed"])
    encoder.save_pretrained(folder / "text_encoder", safe_serialization=True)
    return folder / "tokenizer", folder / "text_encoder"


def unknown_pieces(tokenizer, text: str) -> list[str]:
    """The words of ``text`` that do not tokenise to exactly one vocabulary token (the instruction words
    should all do), in order; [] when every word is a whole token."""
    pieces = []
    for word in pre_tokenize(text):
        ids = tokenizer(word, add_special_tokens=False).input_ids
        if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
            pieces.append(word)
    return pieces
