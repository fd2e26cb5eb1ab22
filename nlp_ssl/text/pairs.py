"""How a text or a sentence pair becomes model input, as each family expects.

The tokenizer's own pair template for BERT (``[CLS] a [SEP] b [SEP]``, segment ids 0/1), ModernBERT
and XLM (``</s> a </s> b </s>``), and GPT-1 §3.3's ``<|start|> a <|delim|> b <|extract|>`` for causal
models, whose classifier reads the last, *extract*, token.
"""

from __future__ import annotations

from nlp_ssl.models.architectures import is_causal

#: GPT-1 §3.3's tokens around a (pair of) text(s) for a causal model: start, delimiter, extract.
GPT1_TOKENS = ("<|start|>", "<|delim|>", "<|extract|>")


def prepare_pair_layout(tokenizer, config) -> bool:
    """Give a causal model's tokenizer GPT-1's input layout; True when tokens were added.

    ``<|start|> a <|extract|>`` and ``<|start|> a <|delim|> b <|extract|>``, as a post-processor
    template saved in ``tokenizer.json``, so ``pipeline("text-classification")`` on the saved folder
    lays out ``{"text": a, "text_pair": b}`` the same way. The extract token is not the pad token, so
    GPT-2's classifier (which reads the last non-pad token) reads it. Encoders keep their tokenizer's
    own template (``[CLS] a [SEP] b [SEP]``).
    """
    if not is_causal(config):
        return False
    from tokenizers import processors

    before = len(tokenizer)
    missing = [t for t in GPT1_TOKENS if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    start, delim, extract = GPT1_TOKENS
    template = processors.TemplateProcessing(
        single=f"{start} $A {extract}", pair=f"{start} $A {delim} $B:1 {extract}:1",
        special_tokens=[(t, tokenizer.convert_tokens_to_ids(t)) for t in GPT1_TOKENS],
    )
    backend = tokenizer.backend_tokenizer
    current = backend.post_processor
    keep = [current] if isinstance(current, processors.ByteLevel) else []
    backend.post_processor = processors.Sequence([*keep, template])
    return len(tokenizer) > before


def tokenize_texts(tokenizer, texts, pairs=None, max_length: int = 128) -> dict:
    """The tokenizer's own layout of single texts or pairs; a pair too long loses tokens from its
    longer side first (``truncation="longest_first"``), so neither sentence is dropped whole."""
    return tokenizer(texts, pairs, truncation="longest_first" if pairs is not None else True, max_length=max_length)
