"""Token shards: tokenise a corpus once into memmap files, then serve packed sequences.

Layout of a shard folder::

    meta.json    {"tokenizer": fingerprint, "vocab_size", "eot_id", "dtype",
                  "documents": {"train", "val"}, "tokens": {"train", "val"}, "source"}
    train.bin    every train document's ids followed by the end-of-text id
    val.bin      the same for validation documents

Documents go to validation by a hash of their index (``val_fraction`` of
them), so the split is deterministic and independent of file order beyond the
document index. ``meta.json`` is written last and atomically: a folder without
it is incomplete and is rebuilt.
"""

from __future__ import annotations

import contextlib
import json
import os
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .tokenizer import TextTokenizer

_ENCODE_CHUNK = 512


class ShardMismatchError(ValueError):
    """Existing shards were made with a different tokenizer or source."""


def is_validation(index: int, val_fraction: float) -> bool:
    """Deterministic document split: CRC32 of the index, compared to the fraction."""
    return (zlib.crc32(str(index).encode()) % 1_000_000) < val_fraction * 1_000_000


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 65536 else np.dtype(np.uint32)


def build_shards(
    documents: Iterable[str], tokenizer: TextTokenizer, folder: Path, *, val_fraction: float, source: str
) -> dict:
    """Tokenise ``documents`` into ``folder`` or reuse what is there; return the header.

    Reuse requires the same tokenizer fingerprint and source fingerprint; a
    different tokenizer is refused with a message (a different source means
    the data changed, so the shards are rebuilt).
    """
    meta_path = folder / "meta.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta["tokenizer"] != tokenizer.fingerprint:
            raise ShardMismatchError(
                f"{folder} holds shards made with tokenizer {meta['tokenizer']} ({meta.get('tokenizer_label')}), "
                f"not {tokenizer.fingerprint} ({tokenizer.label}); delete the folder or use another cache dir"
            )
        if meta["source"] == source and meta.get("val_fraction") == val_fraction:
            return meta
    folder.mkdir(parents=True, exist_ok=True)
    dtype = token_dtype(tokenizer.vocab_size)
    counts = {"train": 0, "val": 0}
    docs = {"train": 0, "val": 0}
    tmp = {split: folder / f"{split}.bin.tmp{os.getpid()}" for split in counts}
    try:
        with contextlib.ExitStack() as stack:
            handles = {split: stack.enter_context(open(path, "wb")) for split, path in tmp.items()}
            index = 0
            chunk: list[str] = []
            for doc in documents:
                chunk.append(doc)
                if len(chunk) == _ENCODE_CHUNK:
                    index = _write_chunk(chunk, index, tokenizer, dtype, handles, counts, docs, val_fraction)
                    chunk = []
            if chunk:
                _write_chunk(chunk, index, tokenizer, dtype, handles, counts, docs, val_fraction)
        for split in counts:
            if counts[split] == 0:
                raise ValueError(f"{split} split is empty ({docs['train'] + docs['val']} documents in all): "
                                 "the corpus is too small for the validation fraction")
        for split in counts:
            os.replace(tmp[split], folder / f"{split}.bin")
    finally:  # a failed build (bad input, full disk, Ctrl-C) leaves no temporary files behind
        for path in tmp.values():
            path.unlink(missing_ok=True)
    meta = {
        "tokenizer": tokenizer.fingerprint, "tokenizer_label": tokenizer.label, "vocab_size": tokenizer.vocab_size,
        "eot_id": tokenizer.eot_id, "dtype": dtype.name, "documents": docs, "tokens": counts, "source": source,
        "val_fraction": val_fraction,
    }
    tmp_meta = folder / f"meta.json.tmp{os.getpid()}"
    tmp_meta.write_text(json.dumps(meta, indent=2))
    os.replace(tmp_meta, meta_path)
    return meta


def _write_chunk(chunk, index, tokenizer, dtype, handles, counts, docs, val_fraction) -> int:
    for ids in tokenizer.encode_batch(chunk):
        split = "val" if is_validation(index, val_fraction) else "train"
        arr = np.asarray(ids + [tokenizer.eot_id], dtype=dtype)
        arr.tofile(handles[split])
        counts[split] += arr.size
        docs[split] += 1
        index += 1
    return index


@dataclass
class PackedTokens:
    """A split's token stream cut into non-overlapping sequences of ``seq_len``."""

    tokens: np.memmap
    seq_len: int

    @classmethod
    def open(cls, folder: Path, split: str, seq_len: int) -> "PackedTokens":
        meta = json.loads((folder / "meta.json").read_text())
        data = np.memmap(folder / f"{split}.bin", dtype=np.dtype(meta["dtype"]), mode="r")
        packed = cls(data, seq_len)
        if len(packed) == 0:
            raise ValueError(f"{folder}/{split}.bin holds {data.size} tokens: fewer than one sequence of {seq_len}")
        return packed

    def __len__(self) -> int:
        return self.tokens.size // self.seq_len

    def get(self, indices: Iterable[int]) -> torch.Tensor:
        rows = [np.asarray(self.tokens[i * self.seq_len : (i + 1) * self.seq_len], dtype=np.int64) for i in indices]
        return torch.from_numpy(np.stack(rows))


class ShardBatches:
    """Micro-batches drawn from a packed split in a seeded random order, epoch after epoch.

    The order is a pure function of (seed, position), so the state is one
    integer and resuming is exact. ``rank``/``world_size`` shard every global
    micro-batch across data-parallel processes.
    """

    def __init__(self, data: PackedTokens, micro_batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        self.data = data
        self.micro_batch_size = micro_batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.position = 0  # sequences consumed by all ranks together
        self._epoch = -1
        self._order: np.ndarray | None = None

    def _index(self, k: int) -> int:
        epoch, offset = divmod(k, len(self.data))
        if epoch != self._epoch:
            self._order = np.random.default_rng([self.seed, epoch]).permutation(len(self.data))
            self._epoch = epoch
        assert self._order is not None
        return int(self._order[offset])

    def next(self) -> torch.Tensor:
        start = self.position + self.rank * self.micro_batch_size
        batch = self.data.get(self._index(start + i) for i in range(self.micro_batch_size))
        self.position += self.micro_batch_size * self.world_size
        return batch

    def state_dict(self) -> dict:
        return {"position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.position = int(state["position"])
