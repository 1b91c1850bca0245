"""Hub corpora (C4, OpenWebText) streamed through ``datasets`` and packed on the fly.

The stream is read in order, tokenised, joined with the end-of-text id and
cut into sequences. The state (documents consumed, tokens carried over) goes
into checkpoints, so a resumed run skips exactly what was already used.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from .corpus import DataError
from .tokenizer import TextTokenizer

_ENCODE_CHUNK = 64


@dataclass(frozen=True)
class HubCorpus:
    """A streaming corpus on the Hugging Face hub and its paper tokenizer."""

    path: str
    config: str | None
    train_split: str
    val_split: str | None
    tokenizer: str


HUB_CORPORA = {
    "c4": HubCorpus("allenai/c4", "en", "train", "validation", "t5-base"),
    "openwebtext": HubCorpus("Skylion007/openwebtext", None, "train", None, "gpt2"),
}


def hub_stream(corpus: HubCorpus, split: str) -> Any:
    """``datasets.load_dataset(..., streaming=True)`` for one split of a hub corpus."""
    from datasets import load_dataset

    return load_dataset(corpus.path, corpus.config, split=split, streaming=True)


def local_stream(path: str, fmt: str) -> Any:
    """The same streaming reader over a local ``json``/``parquet`` file (tests, offline mirrors)."""
    from datasets import load_dataset

    return load_dataset(fmt, data_files=path, split="train", streaming=True)


class StreamBatches:
    """Packed micro-batches from a streaming dataset of ``{"text": ...}`` rows.

    ``open_stream(skip)`` must return an iterable over the rows after the
    first ``skip`` (``dataset.skip(skip)`` for ``datasets``). The state is
    ``docs`` (rows whose tokens entered the buffer) and ``buffer`` (tokens not
    yet emitted); ``keep(row_index)`` selects a deterministic subset of rows
    (used to hold out validation rows when a corpus has no validation split).
    """

    def __init__(
        self,
        open_stream: Callable[[int], Any],
        tokenizer: TextTokenizer,
        seq_len: int,
        micro_batch_size: int,
        *,
        keep: Callable[[int], bool] = lambda i: True,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.open_stream = open_stream
        self.tokenizer = tokenizer
        self.seq_len = seq_len
        self.micro_batch_size = micro_batch_size
        self.keep = keep
        self.rank = rank
        self.world_size = world_size
        self.docs = 0
        self.buffer: list[int] = []
        self._rows: Iterator[Any] | None = None
        self._pending: deque[list[int]] = deque()

    def _fill(self, needed: int) -> None:
        while len(self.buffer) < needed:
            if not self._pending:
                self._read_chunk()
            self.buffer.extend(self._pending.popleft())
            self.docs += 1

    def _read_chunk(self) -> None:
        if self._rows is None:
            self._rows = iter(self.open_stream(self.docs))
        texts: list[str] = []
        start = self.docs + len(self._pending)
        for row in self._rows:
            texts.append(row["text"] if self.keep(start + len(texts)) else "")
            if len(texts) == _ENCODE_CHUNK:
                break
        if not texts:
            raise DataError(f"the data stream ended after {self.docs} documents")
        for text, ids in zip(texts, self.tokenizer.encode_batch(texts)):
            self._pending.append(ids + [self.tokenizer.eot_id] if text else [])

    def next(self) -> torch.Tensor:
        rows = []
        for _ in range(self.world_size):
            for _ in range(self.micro_batch_size):
                self._fill(self.seq_len)
                rows.append(self.buffer[: self.seq_len])
                del self.buffer[: self.seq_len]
        mine = rows[self.rank * self.micro_batch_size : (self.rank + 1) * self.micro_batch_size]
        return torch.tensor(mine, dtype=torch.long)

    def state_dict(self) -> dict:
        return {"docs": self.docs, "buffer": torch.tensor(self.buffer, dtype=torch.int64)}

    def load_state_dict(self, state: dict) -> None:
        self.docs = int(state["docs"])
        self.buffer = [int(t) for t in state["buffer"].tolist()]
        self._rows = None
        self._pending.clear()
