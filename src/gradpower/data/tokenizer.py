"""Tokenizers: train a byte-level BPE with ``tokenizers``, or load a pretrained one.

Both are used through :class:`TextTokenizer`, which knows its vocab size, its
end-of-text id and a fingerprint (hash of its full JSON definition) that token
shards record so they are never reused with another tokenizer.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from ..errors import BadInput
from ..extras import require
from ..fileio import StorageError, atomic_write_text, describe_os_error

EOT = "<|endoftext|>"
_MAX_WORD = 1000
_LONG_RUN = re.compile(rf"\S{{{_MAX_WORD + 1},}}")


class TokenizerFileError(BadInput):
    """A tokenizer file that cannot be read (truncated, garbage)."""


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


def trainer_text(doc: str) -> str:
    """A document as the BPE trainer sees it: whitespace-free runs cut into pieces of at most 1000 characters.

    The trainer's pair counting is quadratic in the length of one "word", so a
    10 MB line without whitespace would never finish; no real word is that
    long, and only the merge statistics see the cut (encoding reads the text as it is).
    """
    return _LONG_RUN.sub(lambda m: " ".join(m[0][i:i + _MAX_WORD] for i in range(0, len(m[0]), _MAX_WORD)), doc)


def train_bpe(documents: Iterable[str], vocab_size: int, path: Path) -> TextTokenizer:
    """Train a byte-level BPE (every byte is representable, so no unknown tokens) and save it atomically."""
    if vocab_size < 257 + 1:
        raise BadInput(f"BPE vocab_size must be at least 258 (256 bytes + end-of-text + 1), got {vocab_size}")
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOT], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2, show_progress=False,
    )
    backend.train_from_iterator((trainer_text(doc) for doc in documents), trainer=trainer)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(describe_os_error(exc, path.parent, "creating")) from None
    atomic_write_text(path, backend.to_str())
    return _from_backend(backend, f"bpe{vocab_size}")


def _from_backend(backend: Tokenizer, label: str) -> TextTokenizer:
    eot = backend.token_to_id(EOT)
    if eot is None:
        raise BadInput(f"tokenizer {label} has no {EOT} token")
    return TextTokenizer(backend, eot, backend.get_vocab_size(), label)


def load_bpe(path: Path) -> TextTokenizer:
    """A BPE saved by :func:`train_bpe`; a damaged file raises :class:`TokenizerFileError` naming it."""
    try:
        backend = Tokenizer.from_file(str(path))
    except Exception as exc:  # noqa: BLE001 - the Rust library raises a plain Exception for any bad file
        raise TokenizerFileError(f"{path} is not a readable tokenizer ({str(exc).splitlines()[0][:100]})") from None
    return _from_backend(backend, path.stem.removeprefix("tokenizer-"))


def load_pretrained(name_or_path: str) -> TextTokenizer:
    """A Hugging Face tokenizer by hub name (``t5-base``, ``gpt2``) or local folder.

    Documents are joined with the tokenizer's EOS token; the vocab size is
    ``len(tokenizer)`` (base vocab plus added tokens, 32100 for T5).
    """
    require(f"the pretrained tokenizer {name_or_path!r}", "transformers")
    from transformers import AutoTokenizer
    try:
        tok = AutoTokenizer.from_pretrained(name_or_path)
    except OSError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInput(f"cannot load tokenizer {name_or_path!r}: {first}") from exc
    if not getattr(tok, "is_fast", False):
        raise BadInput(f"tokenizer {name_or_path!r} has no fast (Rust) version")
    if tok.eos_token_id is None:
        raise BadInput(f"tokenizer {name_or_path!r} has no EOS token to join documents with")
    label = Path(name_or_path).name if Path(name_or_path).exists() else name_or_path.replace("/", "_")
    return TextTokenizer(tok.backend_tokenizer, tok.eos_token_id, len(tok), label)
