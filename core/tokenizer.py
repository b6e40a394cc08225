"""Arbor's character-level tokenizer, built in code with `tokenizers` and wrapped for transformers.

One token per printable ASCII character plus newline and tab; anything else maps to ``<unk>``. A BPE
model with no merges is exactly a character tokenizer, and ``decoders.Fuse`` joins characters back
without the spaces a plain decode would insert.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, normalizers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>"}
CHARACTERS = "\n\t" + "".join(chr(c) for c in range(32, 127))


def build_char_tokenizer() -> PreTrainedTokenizerFast:
    """A fresh character tokenizer; its vocabulary is the special tokens then CHARACTERS."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS.values())}
    for ch in CHARACTERS:
        vocab[ch] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=SPECIAL_TOKENS["unk_token"]))
    # NFKC folds look-alike unicode (full-width digits, ligatures) onto ASCII before lookup.
    core.normalizer = normalizers.NFKC()
    core.decoder = decoders.Fuse()
    # Left padding: generation batches line every prompt up at the same last column.
    return PreTrainedTokenizerFast(
        tokenizer_object=core, clean_up_tokenization_spaces=False, padding_side="left", **SPECIAL_TOKENS
    )
