"""Train a small byte-level BPE tokenizer offline, with an architecture's special tokens.

Byte-level BPE never meets an unknown character, so any pool text tokenizes; training on the pool
itself (when given) keeps sequences short for the tiny proxies.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

BUILTIN_CORPUS = """\
The quick brown fox jumps over the lazy dog. A picture shows a red circle above a blue square.
Question: What is the area of a rectangle with sides 3 and 4? Answer: The area is 3 * 4 = 12.
Question: How many triangles are in the figure? Answer: Count them one by one; there are 5.
The image shows a graph of y = 2x + 1. The slope is 2 and the intercept is 1.
Solve for x: 2x + 6 = 14. Subtract 6 from both sides: 2x = 8. Divide by 2: x = 4.
Describe the image. The image contains a cat sitting on a wooden table next to a window.
The sum of the angles of a triangle is 180 degrees. A right angle measures 90 degrees.
If a train travels 60 miles per hour for 2 hours, it covers 120 miles.
The chart compares sales in January, February and March; March is the highest.
Therefore, the final answer is 42. Let us think step by step before answering.
Which option is correct? (A) 10 (B) 12 (C) 14 (D) 16. The correct option is (B).
The circle has radius 5, so its circumference is 2 * pi * 5 = 31.4 and its area is 78.5.
A system prompt tells the assistant how to behave. The user asks a question about a photo.
0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 + - * / = < > ( ) [ ] { } , . ; : ? !
"""


def train_bpe_tokenizer(
    texts: Iterable[str] | None,
    special_tokens: Sequence[str],
    *,
    vocab_size: int,
    bos: str | None,
    eos: str,
    pad: str,
    chat_template: str,
    extra_special_tokens: dict[str, str] | None = None,
):
    """A `PreTrainedTokenizerFast` with `special_tokens` first (ids 0..n-1) and learned merges.

    `extra_special_tokens` become named attributes (`tokenizer.boi_token`, ...), which some
    processors (InternVL, Gemma 3) read."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = list(texts) if texts is not None else []
    if not corpus:
        corpus = BUILTIN_CORPUS.splitlines()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        padding_side="right",
        **({"extra_special_tokens": extra_special_tokens} if extra_special_tokens else {}),
    )
    fast.chat_template = chat_template
    return fast
