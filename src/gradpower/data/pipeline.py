"""From a data spec to train batches, a fixed validation set and a tokenizer.

``data`` is ``"shakespeare"`` (bundled), ``"c4"`` / ``"openwebtext"``
(streamed from the hub), a local text file / folder / ``.jsonl`` /
``.parquet`` (tokenised once into memmap shards), or ``stream:PATH`` to read
a local ``.jsonl``/``.parquet`` file through the same streaming code as C4.
``tokenizer`` is ``"bpe"`` (train a byte-level BPE on the corpus, cached
beside the shards) or a pretrained name/folder; ``None`` picks the paper's
tokenizer for hub corpora and ``bpe`` otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from ..errors import BadInput
from ..fileio import StorageError, default_cache_root, describe_os_error, folder_lock, remove_stale_tmp, warn
from .corpus import DataError, LocalCorpus, open_local
from .shards import PackedTokens, ShardBatches, build_shards, is_validation
from .streaming import HUB_CORPORA, StreamBatches, hub_stream, local_stream
from .tokenizer import TextTokenizer, TokenizerFileError, load_bpe, load_pretrained, train_bpe


@dataclass
class DataConfig:
    """Where tokens come from and how they are cut."""

    data: str = "shakespeare"
    tokenizer: str | None = None
    bpe_vocab_size: int | None = None  # default: the model's vocab size
    val_fraction: float = 0.1  # the bundled corpus then holds out ~113k tokens, room for the final evaluation
    eval_batches: int = 8
    cache_dir: str | None = None
    verify_cache: bool = False  # check every shard file's full sha256 (default: sizes and a checksum of the ends)
    eval_tokens: int = 0  # tokens of the fixed held-out set of the final evaluation (0: none)


class BatchSource(Protocol):
    def next(self) -> torch.Tensor: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


@dataclass
class Data:
    """Train batches; ``val``, the regular evaluations' batches; ``final_val``, the final evaluation's (the
    same held-out sequences for every seed); the tokenizer.

    ``val`` is spread evenly over the final evaluation's sequences (:func:`spread`), not their first ones: the
    held-out split is a stretch of text, so its first few thousand tokens can be easier or harder than the whole,
    and a curve on them would end off the final number (0.17 nats below it on the bundled corpus, measured). Spread
    over the same set, the regular evaluation agrees with the final one up to its sampling error, and what is read
    from its curve (the drop over the last doubling, a speed-up) speaks of the same text as the verdict."""

    train: BatchSource
    val: list[torch.Tensor]
    tokenizer: TextTokenizer
    final_val: list[torch.Tensor] = field(default_factory=list)
    #: Tokens of the training split (None for a stream, whose size is unknown): what a run's epochs divide by.
    train_tokens: int | None = None


def spread(count: int, total: int) -> list[int]:
    """``count`` indices spread evenly over ``range(total)`` (all of them when ``total <= count``)."""
    if total <= count:
        return list(range(total))
    return [i * total // count for i in range(count)]


#: Tokens per forward pass of the final evaluation (it holds no activations for a backward pass).
FINAL_EVAL_BATCH_TOKENS = 4096


def final_sequences(eval_tokens: int, seq_len: int, available: int | None = None) -> int:
    """Sequences of the final evaluation: enough for ``eval_tokens`` tokens, at most ``available``."""
    wanted = -(-eval_tokens // seq_len) if eval_tokens > 0 else 0
    if available is not None and wanted > available:
        message = (f"the held-out split holds {available * seq_len} tokens, fewer than --eval-tokens {eval_tokens}: "
                   "the final evaluation uses all of them (a larger --val-fraction holds out more)")
        if message not in _WARNED:  # once per process, not once per run of an experiment
            _WARNED.add(message)
            warn(message)
        return available
    return wanted


_WARNED: set[str] = set()


def _tokenizer_for_local(cfg: DataConfig, corpus: LocalCorpus, cache: Path, vocab_size: int) -> TextTokenizer:
    name = pretrained_tokenizer(cfg)
    if name is not None:
        return load_pretrained(name)
    size = cfg.bpe_vocab_size or vocab_size
    path = cache / f"tokenizer-bpe{size}.json"
    if path.exists():
        try:
            return load_bpe(path)
        except TokenizerFileError as exc:
            warn(f"{exc}; training it again (the token shards made with it are rebuilt too)")
    return train_bpe(corpus.documents(), size, path)


def _local_cache(cfg: DataConfig, vocab_size: int) -> tuple[TextTokenizer, Path]:
    """The local corpus's tokenizer and its token-shard folder, built once in the cache (or verified there)."""
    corpus = open_local(cfg.data)
    fingerprint = corpus.fingerprint()
    cache = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_root() / f"{corpus.name}-{fingerprint}"
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(describe_os_error(exc, cache, "creating the cache folder")) from None
    # One builder at a time (e.g. compare --jobs 2 on a fresh cache): the others wait, then reuse its work.
    with folder_lock(cache, wait=True, what="cache build"):
        for stale in remove_stale_tmp(cache):
            warn(f"removed {stale}, left by an interrupted cache write")
        tokenizer = _tokenizer_for_local(cfg, corpus, cache, vocab_size)
        folder = cache / f"shards-{tokenizer.label}"
        build_shards(corpus.documents(), tokenizer, folder, val_fraction=cfg.val_fraction, source=fingerprint,
                     verify=cfg.verify_cache)
    return tokenizer, folder


def _local_data(
    cfg: DataConfig, seq_len: int, micro_batch_size: int, seed: int, vocab_size: int, rank: int, world: int
) -> Data:
    tokenizer, folder = _local_cache(cfg, vocab_size)
    train = ShardBatches(PackedTokens.open(folder, "train", seq_len), micro_batch_size, seed, rank, world)
    val_tokens = PackedTokens.open(folder, "val", seq_len)

    def batches(indices: list[int], size: int = micro_batch_size) -> list[torch.Tensor]:
        return [val_tokens.get(indices[i:i + size]) for i in range(0, len(indices), size)]

    regular = cfg.eval_batches * micro_batch_size
    final_count = final_sequences(cfg.eval_tokens, seq_len, len(val_tokens))
    # the regular evaluation: sequences spread over the final evaluation's (the split's first ones without one)
    val = batches(spread(regular, final_count) if final_count > regular else list(range(min(len(val_tokens),
                                                                                              regular))))
    final = batches(list(range(final_count)), max(micro_batch_size, FINAL_EVAL_BATCH_TOKENS // seq_len))
    return Data(train, val, tokenizer, final, train_tokens=int(train.data.tokens.size))


def is_streamed(data: str) -> bool:
    """Whether ``data`` is read through the streaming code (``datasets``) rather than token shards."""
    return data in HUB_CORPORA or data.startswith("stream:")


def pretrained_tokenizer(cfg: DataConfig) -> str | None:
    """The pretrained tokenizer ``cfg`` loads (``None``: a BPE trained on the local corpus)."""
    name = cfg.tokenizer or (HUB_CORPORA[cfg.data].tokenizer if cfg.data in HUB_CORPORA else None)
    if is_streamed(cfg.data) and name in (None, "bpe"):
        raise DataError(
            f"--data {cfg.data} is streamed, so it needs a pretrained tokenizer (--tokenizer NAME_OR_PATH); "
            "a BPE is trained only on local corpora"
        )
    return None if name == "bpe" else name


def needed_packages(cfg: DataConfig) -> list[tuple[str, str]]:
    """``(feature, module)`` for every optional package reading ``cfg``'s data needs (checked before a run)."""
    needs = [(f"--data {cfg.data}", "datasets")] if is_streamed(cfg.data) else []
    name = pretrained_tokenizer(cfg)
    if name is not None:
        feature = f"--tokenizer {name}" if cfg.tokenizer else f"--data {cfg.data} (its tokenizer {name})"
        needs.append((feature, "transformers"))
    return needs


def _stream_tokenizer(cfg: DataConfig) -> TextTokenizer:
    """A streamed corpus's tokenizer; a local file to stream is checked first."""
    path = cfg.data.removeprefix("stream:")
    if cfg.data not in HUB_CORPORA and not Path(path).is_file():
        raise DataError(f"{path}: no such file for streaming")
    name = pretrained_tokenizer(cfg)
    assert name is not None  # pretrained_tokenizer refuses a streamed corpus without one
    return load_pretrained(name)


def _stream_data(cfg: DataConfig, seq_len: int, micro_batch_size: int, rank: int, world: int) -> Data:
    tokenizer = _stream_tokenizer(cfg)
    if cfg.data in HUB_CORPORA:
        corpus = HUB_CORPORA[cfg.data]

        def opener(split: str) -> Callable[[int], Any]:
            return lambda skip: hub_stream(corpus, split).skip(skip)

        train_open, val_open = opener(corpus.train_split), opener(corpus.val_split or corpus.train_split)
        held_out = corpus.val_split is None
    else:
        path = cfg.data.removeprefix("stream:")
        fmt = "parquet" if path.endswith(".parquet") else "json"
        def train_open(skip: int) -> Any:
            return local_stream(path, fmt).skip(skip)

        val_open = train_open
        held_out = True
    keep_train: Callable[[int], bool] = (
        (lambda i: not is_validation(i, cfg.val_fraction)) if held_out else (lambda i: True)
    )
    keep_val: Callable[[int], bool] = (lambda i: is_validation(i, cfg.val_fraction)) if held_out else (lambda i: True)
    train = StreamBatches(
        train_open, tokenizer, seq_len, micro_batch_size, keep=keep_train, rank=rank, world_size=world
    )
    val_stream = StreamBatches(val_open, tokenizer, seq_len, micro_batch_size, keep=keep_val)
    final_batches = -(-final_sequences(cfg.eval_tokens, seq_len) // micro_batch_size)
    held_out_batches = [val_stream.next() for _ in range(max(cfg.eval_batches, final_batches))]
    regular = (spread(cfg.eval_batches, final_batches) if final_batches > cfg.eval_batches
               else list(range(cfg.eval_batches)))  # batches spread over the final evaluation's, as above
    return Data(train, [held_out_batches[i] for i in regular], tokenizer, held_out_batches[:final_batches])


def build_data(
    cfg: DataConfig,
    *,
    seq_len: int,
    micro_batch_size: int,
    seed: int,
    vocab_size: int,
    rank: int = 0,
    world_size: int = 1,
) -> Data:
    """Resolve ``cfg.data`` into train batches, validation batches and the tokenizer."""
    _check_val_fraction(cfg)
    if is_streamed(cfg.data):
        return _stream_data(cfg, seq_len, micro_batch_size, rank, world_size)
    return _local_data(cfg, seq_len, micro_batch_size, seed, vocab_size, rank, world_size)


def _check_val_fraction(cfg: DataConfig) -> None:
    if not 0 < cfg.val_fraction < 1:
        raise BadInput(f"val_fraction must be in (0, 1), got {cfg.val_fraction}")


def prepare_data(cfg: DataConfig, vocab_size: int, seq_len: int) -> None:
    """Refuse what :func:`build_data` would refuse about ``cfg``'s corpus and tokenizer, before any run.

    A local corpus gets its tokenizer and token shards built (or verified) in
    its cache, where every run then finds them, and each split must hold a
    sequence of ``seq_len``; a streamed corpus gets its tokenizer loaded and
    its local file checked. An experiment calls this once per data setting,
    so bad data stops it before its first run starts.
    """
    _check_val_fraction(cfg)
    if is_streamed(cfg.data):
        _stream_tokenizer(cfg)
        return
    _, folder = _local_cache(cfg, vocab_size)
    for split in ("train", "val"):
        PackedTokens.open(folder, split, seq_len)
