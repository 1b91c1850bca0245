"""Token shards: tokenise a corpus once into memmap files, then serve packed sequences.

Layout of a shard folder::

    meta.json    {"tokenizer": fingerprint, "vocab_size", "eot_id", "dtype", "documents": {"train", "val"},
                  "tokens": {"train", "val"}, "source", "val_fraction",
                  "files": {"train.bin": {"size", "quick", "sha256"}, "val.bin": {...}}}
    train.bin    every train document's ids followed by the end-of-text id
    val.bin      the same for validation documents

Documents go to validation by a hash of their index (``val_fraction`` of
them), so the split is deterministic and independent of file order beyond the
document index. ``meta.json`` is written last and atomically and records each
file's size and checksums: a folder without it, or whose files do not match
it, is rebuilt (with a warning when it was damaged).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import BadInput
from ..fileio import TMP_MARK, StorageError, atomic_write_text, describe_os_error, remove_stale_tmp, warn
from .tokenizer import TextTokenizer

_ENCODE_CHUNK = 512
_DIGEST_SPAN = 1 << 16


def is_validation(index: int, val_fraction: float) -> bool:
    """Deterministic document split: CRC32 of the index, compared to the fraction."""
    return (zlib.crc32(str(index).encode()) % 1_000_000) < val_fraction * 1_000_000


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 65536 else np.dtype(np.uint32)


def file_digest(path: Path, full: bool = False) -> str:
    """sha256 of the whole file (``full``) or of its size, first and last 64 KiB (cheap enough for every open)."""
    h = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as f:
        if full:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        else:
            h.update(str(size).encode())
            h.update(f.read(_DIGEST_SPAN))
            f.seek(max(0, size - _DIGEST_SPAN))
            h.update(f.read(_DIGEST_SPAN))
    return h.hexdigest()


def cache_problem(folder: Path, tokenizer: TextTokenizer, source: str, val_fraction: float, verify: bool) -> str | None:
    """Why the shards in ``folder`` cannot be reused (None when they can): missing, stale or damaged."""
    meta_path = folder / "meta.json"
    if not meta_path.exists():
        return "missing" if not any(folder.glob("*.bin")) else f"{meta_path} is missing"
    try:
        meta = json.loads(meta_path.read_text())
        files = meta["files"]
        fingerprint, meta_source, fraction, dtype = (
            meta["tokenizer"],
            meta["source"],
            meta["val_fraction"],
            meta["dtype"],
        )
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        return f"{meta_path} is damaged or from an older version ({type(exc).__name__})"
    if fingerprint != tokenizer.fingerprint:
        return f"{folder} was made with another tokenizer ({fingerprint}, now {tokenizer.fingerprint})"
    if meta_source != source or fraction != val_fraction:
        return "stale"  # the corpus or the split changed: a rebuild, not a fault
    itemsize = np.dtype(dtype).itemsize
    for split in ("train", "val"):
        path = folder / f"{split}.bin"
        expected = files.get(f"{split}.bin", {})
        if not path.exists():
            return f"{path} is missing"
        size = path.stat().st_size
        if size != expected.get("size") or size % itemsize or size == 0:
            return f"{path} has {size} bytes, {expected.get('size')} expected"
        digest = file_digest(path, full=verify)
        if digest != expected.get("sha256" if verify else "quick"):
            return f"{path} does not match its recorded checksum"
    return None


def build_shards(
    documents: Iterable[str], tokenizer: TextTokenizer, folder: Path, *, val_fraction: float, source: str,
    verify: bool = False,
) -> dict:
    """Tokenise ``documents`` into ``folder`` or reuse what is there; return the header.

    Reuse requires the same tokenizer and source fingerprints and intact files
    (sizes and a checksum of each file's ends, recorded in ``meta.json``;
    ``verify`` checks the whole files). Anything else is rebuilt, with a
    warning when the cache was damaged rather than stale: a damaged cache is
    never used silently. Call it under the cache folder's lock (see
    :func:`gradpower.data.pipeline.build_data`).
    """
    problem = cache_problem(folder, tokenizer, source, val_fraction, verify)
    if problem is None:
        return json.loads((folder / "meta.json").read_text())
    if problem not in ("missing", "stale"):
        warn(f"{problem}; rebuilding the token shards in {folder}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(describe_os_error(exc, folder, "creating")) from None
    remove_stale_tmp(folder)
    dtype = token_dtype(tokenizer.vocab_size)
    counts = {"train": 0, "val": 0}
    docs = {"train": 0, "val": 0}
    tmp = {split: folder / f".{split}.bin{TMP_MARK}{os.getpid()}" for split in counts}
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
            for handle in handles.values():
                handle.flush()
                os.fsync(handle.fileno())
        for split in counts:
            if counts[split] == 0:
                raise BadInput(f"{split} split is empty ({docs['train'] + docs['val']} documents in all): "
                               "the corpus is too small for the validation fraction")
        (folder / "meta.json").unlink(missing_ok=True)  # the header goes last: without it the folder is incomplete
        for split in counts:
            os.replace(tmp[split], folder / f"{split}.bin")
    except OSError as exc:
        raise StorageError(f"{describe_os_error(exc, folder, 'writing token shards in')}; the partial shards were "
                           "removed") from None
    finally:  # a failed build (bad input, full disk, Ctrl-C) leaves no temporary files behind
        for path in tmp.values():
            path.unlink(missing_ok=True)
    files = {f"{split}.bin": {"size": (folder / f"{split}.bin").stat().st_size,
                              "quick": file_digest(folder / f"{split}.bin"),
                              "sha256": file_digest(folder / f"{split}.bin", full=True)} for split in counts}
    meta = {
        "tokenizer": tokenizer.fingerprint, "tokenizer_label": tokenizer.label, "vocab_size": tokenizer.vocab_size,
        "eot_id": tokenizer.eot_id, "dtype": dtype.name, "documents": docs, "tokens": counts, "source": source,
        "val_fraction": val_fraction, "files": files,
    }
    atomic_write_text(folder / "meta.json", json.dumps(meta, indent=2))
    return meta


def _write_chunk(chunk, index, tokenizer, dtype, handles, counts, docs, val_fraction) -> int:
    for ids in tokenizer.encode_batch(chunk):
        split = "val" if is_validation(index, val_fraction) else "train"
        arr = np.asarray(ids + [tokenizer.eot_id], dtype=dtype)
        handles[split].write(arr.tobytes())  # a file write reports a full disk as ENOSPC (tofile does not)
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
    def open(cls, folder: Path, split: str, seq_len: int) -> PackedTokens:
        meta = json.loads((folder / "meta.json").read_text())
        data = np.memmap(folder / f"{split}.bin", dtype=np.dtype(meta["dtype"]), mode="r")
        packed = cls(data, seq_len)
        if len(packed) == 0:
            raise BadInput(f"{folder}/{split}.bin holds {data.size} tokens: fewer than one sequence of {seq_len}")
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
