"""Downloads from PhysioNet with the checksums PhysioNet publishes.

Every PhysioNet dataset version has a ``SHA256SUMS.txt`` beside its files. :func:`fetch` reads
it once, then lets pooch fetch each file with its SHA-256: a file already on disk with the
right checksum is not downloaded again (an interrupted download resumes by file), a corrupted
or truncated one is fetched again, and a file that still does not match raises.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

__all__ = ["fetch", "parse_sha256sums"]


def parse_sha256sums(text: str) -> dict[str, str]:
    """``{relative path: sha256}`` from the lines ``<64 hex digits>  <path>`` of a
    ``SHA256SUMS.txt`` (``./`` prefixes dropped); ``ValueError`` naming a malformed line."""
    sums: dict[str, str] = {}
    for i, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        digest, _, name = line.partition(" ")
        name = name.strip().lstrip("*")
        if len(digest) != 64 or not all(c in "0123456789abcdefABCDEF" for c in digest) \
                or not name:
            raise ValueError(f"SHA256SUMS line {i} is not '<sha256>  <file>': {line!r}.")
        sums[name.removeprefix("./")] = digest.lower()
    return sums


def fetch(base_url: str, names: Iterable[str], path: str | Path,
          sums: dict[str, str] | None = None) -> list[Path]:
    """Fetch ``names`` (paths relative to ``base_url``) into ``path``, each verified against
    PhysioNet's ``SHA256SUMS.txt`` (read from ``base_url`` unless ``sums`` is given). A name
    without a published checksum raises ``ValueError`` before anything is downloaded."""
    import pooch

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if sums is None:
        listing = pooch.retrieve(base_url + "SHA256SUMS.txt", known_hash=None,
                                 fname="SHA256SUMS.txt", path=path, progressbar=False)
        sums = parse_sha256sums(Path(listing).read_text())
    names = list(names)
    unknown = [n for n in names if n not in sums]
    if unknown:
        raise ValueError(f"No published checksum for {unknown[:5]}{'...' if len(unknown) > 5 else ''}"
                         f" in {base_url}SHA256SUMS.txt: the file names are wrong.")
    out = []
    for n in names:
        target = path / n
        target.parent.mkdir(parents=True, exist_ok=True)
        out.append(Path(pooch.retrieve(base_url + n, known_hash=f"sha256:{sums[n]}",
                                       fname=target.name, path=target.parent,
                                       progressbar=False)))
    return out
