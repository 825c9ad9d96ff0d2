"""Digests of a prepared corpus's files, so that data changed under a run or a prepared folder is noticed.

A file's record is `{"bytes": size, "sha256": hex, "stat": signature}`. getdata.sh writes one per file
into meta.json and every checkpoint carries the records of the data it was trained on. Hashing enwik8's
90 MB train split takes about 0.1 s (sha256 at ~1 GB/s), more on a cold network filesystem, so a file
is only read again when its stat signature is not one already recorded with a digest: an unchanged
file costs one `stat` call.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .download import file_digests

# The files of a prepared corpus that a run reads (meta.json describes them, so it is not among them).
PREPARED_FILES = ("train.npy", "valid.npy", "test.npy", "vocab.json")


def stat_signature(path: str | os.PathLike) -> list[int]:
    """Size, mtime, ctime and inode of a file. Writing, replacing or copying a file changes at least one
    of them, and ctime cannot be set back by a user (unlike mtime, with `touch -r`), so a signature
    equal to a recorded one means the digest recorded with it still holds."""
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def file_record(path: str | os.PathLike, trusted: Iterable[Mapping[str, Any] | None] = ()) -> dict[str, Any]:
    """The record of one file: the digest of a `trusted` record with the same stat signature, else read."""
    signature = stat_signature(path)
    for record in trusted:
        if isinstance(record, Mapping) and record.get("stat") == signature and record.get("sha256"):
            return {"bytes": signature[0], "sha256": record["sha256"], "stat": signature}
    digest = file_digests(Path(path), ("sha256",))["sha256"]
    return {"bytes": signature[0], "sha256": digest, "stat": signature}


def fingerprint(
    folder: str | os.PathLike,
    names: Sequence[str] = PREPARED_FILES,
    trusted: Iterable[Mapping[str, Any] | None] = (),
) -> dict[str, dict[str, Any]]:
    """The records of files `names` in `folder`; `trusted`: earlier records by file name (meta.json's,
    a checkpoint's), whose digests are reused for files whose stat signature they match."""
    sources = [t for t in trusted if isinstance(t, Mapping)]
    return {name: file_record(Path(folder) / name, [t.get(name) for t in sources]) for name in names}


def changed(recorded: Mapping[str, Any], current: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The names in both `recorded` and `current` whose contents differ (size or sha256)."""
    out = []
    for name, now in current.items():
        then = recorded.get(name)
        if isinstance(then, Mapping) and _content(then) != _content(now):
            out.append(name)
    return out


def _content(record: Mapping[str, Any]) -> tuple[Any, Any]:
    return record.get("sha256"), record.get("bytes")


def short(record: Mapping[str, Any] | None) -> str:
    """`sha256 0123abcd4567, 1,234 bytes` for messages."""
    if not isinstance(record, Mapping):
        return "no record"
    size = record.get("bytes")
    size_text = f"{size:,} bytes" if isinstance(size, int) else "size unknown"
    return f"sha256 {str(record.get('sha256'))[:12]}, {size_text}"
