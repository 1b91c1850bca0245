"""Text sources: the bundled Shakespeare corpus and local files, as documents.

The bundled corpus ships inside the package (xz-compressed, checked against
its sha256 on first read), so a fresh machine needs no download. Local data
is a text file, a folder of ``.txt`` files, or ``.jsonl`` / ``.parquet`` with
a ``text`` column (read with pyarrow). Every problem with the input (missing,
empty, not UTF-8, no ``text`` column) raises :class:`DataError` naming the file.
"""

from __future__ import annotations

import hashlib
import lzma
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from ..errors import BadInput

BUNDLED = "shakespeare"
_SHAKESPEARE_SHA256 = "da68ca4e8201d41a12c1d5e82d967bda85105f1dabe823d5735138bccabdd387"
_TEXT_SUFFIXES = (".txt", ".text", ".md")
_DOC_BREAK = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")  # two or more blank lines


class DataError(BadInput):
    """Unusable input data; the message names the file and the problem."""


@lru_cache(maxsize=1)
def shakespeare_text() -> str:
    """The complete works of Shakespeare (5,057,198 bytes of ASCII), verified."""
    raw = lzma.decompress(resources.files("gradpower.data").joinpath("corpora/shakespeare.txt.xz").read_bytes())
    digest = hashlib.sha256(raw).hexdigest()
    if digest != _SHAKESPEARE_SHA256:
        raise DataError(f"bundled corpus is corrupt: sha256 {digest}, expected {_SHAKESPEARE_SHA256}")
    return raw.decode("utf-8")


def split_documents(text: str) -> list[str]:
    """Split one text file into documents at runs of two or more blank lines."""
    return [doc.strip() for doc in _DOC_BREAK.split(text) if doc.strip()]


def _read_utf8(path: Path) -> str:
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{path}: file is empty")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid UTF-8 (byte {exc.start}: {raw[exc.start:exc.start + 1]!r})") from exc


def _read_table_texts(path: Path) -> list[str]:
    import pyarrow as pa
    import pyarrow.json as pa_json
    import pyarrow.parquet as pq

    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    if path.suffix == ".jsonl":
        # pyarrow would stop at the first bad byte with a vague message: check UTF-8 first.
        _read_utf8(path)
    try:
        table = pq.read_table(path) if path.suffix == ".parquet" else pa_json.read_json(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path}: cannot read as {path.suffix[1:]}: {exc}") from exc
    if "text" not in table.column_names:
        raise DataError(f"{path}: no 'text' column (columns: {', '.join(table.column_names) or 'none'})")
    texts = [t for t in table.column("text").to_pylist() if isinstance(t, str) and t.strip()]
    if not texts:
        raise DataError(f"{path}: the 'text' column holds no non-empty text")
    return texts


def _file_documents(path: Path) -> list[str]:
    if path.suffix in (".jsonl", ".json", ".parquet"):
        return _read_table_texts(path)
    return split_documents(_read_utf8(path))


@dataclass(frozen=True)
class LocalCorpus:
    """Documents from the bundled corpus or a local path; ``fingerprint`` keys caches."""

    name: str
    path: Path | None

    def files(self) -> list[Path]:
        if self.path is None:
            return []
        if self.path.is_dir():
            found = sorted(p for p in self.path.rglob("*") if p.is_file() and p.suffix in _TEXT_SUFFIXES)
            if not found:
                raise DataError(f"{self.path}: folder holds no .txt files")
            return found
        return [self.path]

    def documents(self) -> Iterator[str]:
        if self.path is None:
            yield from split_documents(shakespeare_text())
            return
        if not self.path.is_dir():
            yield from _file_documents(self.path)  # a single file: split at blank-line runs / rows
            return
        for f in self.files():  # a folder of .txt files: one document per file
            text = _read_utf8(f).strip()
            if text:
                yield text

    def fingerprint(self) -> str:
        """Changes whenever the content may have changed (names, sizes, mtimes)."""
        if self.path is None:
            return _SHAKESPEARE_SHA256[:16]
        h = hashlib.sha256()
        for f in self.files():
            st = f.stat()
            h.update(f"{f.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
        return h.hexdigest()[:16]


def open_local(spec: str) -> LocalCorpus:
    """``"shakespeare"`` or a path to a text file, folder, .jsonl or .parquet file."""
    if spec == BUNDLED:
        return LocalCorpus(BUNDLED, None)
    path = Path(spec).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such file or folder (data is 'shakespeare', 'c4', 'openwebtext' or a path)")
    return LocalCorpus(path.stem or path.name, path)
