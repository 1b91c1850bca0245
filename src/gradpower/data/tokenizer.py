"""Tokenizers: train a byte-level BPE with ``tokenizers``, or load a pretrained one.

Both are used through :class:`TextTokenizer`, which knows its vocab size, its
end-of-text id and a fingerprint (hash of its full JSON definition) that token
shards record so they are never reused with another tokenizer.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

EOT = "<|endoftext|>"


@dataclass
class TextTokenizer:
    """A fast ``tokenizers.Tokenizer`` plus the end-of-text id used to join documents."""

    backend: Tokenizer
    eot_id: int
    vocab_size: int
    label: str

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.backend.to_str().encode()).hexdigest()[:16]

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.backend.encode_batch(texts, add_special_tokens=False)]


def train_bpe(documents: Iterable[str], vocab_size: int, path: Path) -> TextTokenizer:
    """Train a byte-level BPE (every byte is representable, so no unknown tokens) and save it."""
    if vocab_size < 257 + 1:
        raise ValueError(f"BPE vocab_size must be at least 258 (256 bytes + end-of-text + 1), got {vocab_size}")
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOT], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2, show_progress=False,
    )
    backend.train_from_iterator(documents, trainer=trainer)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        backend.save(str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return _from_backend(backend, f"bpe{vocab_size}")


def _from_backend(backend: Tokenizer, label: str) -> TextTokenizer:
    eot = backend.token_to_id(EOT)
    if eot is None:
        raise ValueError(f"tokenizer {label} has no {EOT} token")
    return TextTokenizer(backend, eot, backend.get_vocab_size(), label)


def load_bpe(path: Path) -> TextTokenizer:
    return _from_backend(Tokenizer.from_file(str(path)), path.stem)


def load_pretrained(name_or_path: str) -> TextTokenizer:
    """A Hugging Face tokenizer by hub name (``t5-base``, ``gpt2``) or local folder.

    Documents are joined with the tokenizer's EOS token; the vocab size is
    ``len(tokenizer)`` (base vocab plus added tokens, 32100 for T5).
    """
    try:
        from transformers import AutoTokenizer
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError("pretrained tokenizers need transformers: pip install 'gradpower[hf]'") from exc
    try:
        tok = AutoTokenizer.from_pretrained(name_or_path)
    except OSError as exc:
        raise ValueError(f"cannot load tokenizer {name_or_path!r}: {exc}") from exc
    if not getattr(tok, "is_fast", False):
        raise ValueError(f"tokenizer {name_or_path!r} has no fast (Rust) version")
    if tok.eos_token_id is None:
        raise ValueError(f"tokenizer {name_or_path!r} has no EOS token to join documents with")
    label = Path(name_or_path).name if Path(name_or_path).exists() else name_or_path.replace("/", "_")
    return TextTokenizer(tok.backend_tokenizer, tok.eos_token_id, len(tok), label)
