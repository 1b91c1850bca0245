"""Text sources: the bundled Shakespeare corpus and local files.

The bundled corpus ships inside the package (xz-compressed, checked against
its sha256 on first read), so a fresh machine needs no download.
"""

from __future__ import annotations

import hashlib
import lzma
from functools import lru_cache
from importlib import resources

BUNDLED = "shakespeare"
_SHAKESPEARE_SHA256 = "da68ca4e8201d41a12c1d5e82d967bda85105f1dabe823d5735138bccabdd387"


@lru_cache(maxsize=1)
def shakespeare_text() -> str:
    """The complete works of Shakespeare (5,057,198 bytes of ASCII), verified."""
    raw = lzma.decompress(resources.files("gradpower.data").joinpath("corpora/shakespeare.txt.xz").read_bytes())
    digest = hashlib.sha256(raw).hexdigest()
    if digest != _SHAKESPEARE_SHA256:
        raise RuntimeError(f"bundled corpus is corrupt: sha256 {digest}, expected {_SHAKESPEARE_SHA256}")
    return raw.decode("utf-8")
