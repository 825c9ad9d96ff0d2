"""Fetching and unpacking source files safely: verify before trust, resume before re-download.

The rule everywhere: a file is written under `<name>.part`, verified (size, sha256 and/or md5), and
only then renamed to `<name>`. A final name therefore always holds a verified file, and a later step
(or a second run) may trust it; a `.part` that fails verification is deleted.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from .datasets import Expected

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
# Some hosts refuse Python's default User-Agent; a browser-like one is accepted everywhere we fetch.
USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0 Safari/537.36 infiniattention-getdata"
)
_TIMEOUT_S = 60


class ChecksumError(ValueError):
    """A file's size or hash differs from the published value."""


class UnsafeArchiveError(ValueError):
    """An archive member would be written outside the target folder."""


def file_digests(path: Path, algorithms: Iterable[str] = ("sha256", "md5")) -> dict[str, str]:
    """Hex digests of a file, read once in 1 MiB chunks."""
    hashers = {name: hashlib.new(name) for name in algorithms}
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            for h in hashers.values():
                h.update(chunk)
    return {name: h.hexdigest() for name, h in hashers.items()}


def verify(path: Path, expected: Expected, label: str | None = None) -> dict:
    """Check a file against its expected size, hashes and text counts; return what was measured, and in
    `checked` the names of the published values it matched (absent when nothing was known to compare).

    Raises ChecksumError naming the file, the expected and the actual value at the first mismatch.
    The size is checked first: it is free and catches truncated downloads.
    """
    label = label or str(path)
    size = path.stat().st_size
    if expected.size is not None and size != expected.size:
        raise ChecksumError(f"{label}: size mismatch: expected {expected.size} bytes, got {size} bytes")
    algorithms = ["sha256"] + (["md5"] if expected.md5 else [])
    measured: dict = {"size": size, **file_digests(path, algorithms)}
    for name in algorithms:
        want = getattr(expected, name)
        if want is not None and measured[name] != want.lower():
            raise ChecksumError(f"{label}: {name} mismatch: expected {want}, got {measured[name]}")
    if expected.lines is not None or expected.tokens is not None:
        measured.update(_text_counts(path, label))
        for name in ("lines", "tokens"):
            want = getattr(expected, name)
            if want is not None and measured[name] != want:
                raise ChecksumError(f"{label}: {name} mismatch: expected {want:,} {name}, got "
                                    f"{measured[name]:,} (not the published file)")
    checked = [n for n in ("size", "sha256", "md5", "lines", "tokens") if getattr(expected, n) is not None]
    return {**measured, "checked": checked} if checked else measured


def text_lines(path: Path) -> Iterator[str]:
    """The lines of a UTF-8 text file as the word-level preparation reads them: text mode with universal
    newlines, as Transformer-XL and torchtext read WikiText. ValueError (naming the file) if not UTF-8."""
    with open(path, encoding="utf-8") as f:
        try:
            yield from f
        except UnicodeDecodeError:
            raise ValueError(f"{path} is not UTF-8 text: word-level preparation reads UTF-8") from None


def _text_counts(path: Path, label: str) -> dict[str, int]:
    """Lines, and tokens as the WikiText paper counts them: whitespace words plus one `<eos>` per line."""
    lines = tokens = 0
    try:
        for line in text_lines(path):
            lines += 1
            tokens += len(line.split()) + 1
    except ValueError:  # not UTF-8
        raise ChecksumError(f"{label}: not UTF-8 text: not the published file") from None
    return {"lines": lines, "tokens": tokens}


def is_url(location: str) -> bool:
    """True for http(s)/ftp/file URLs, False for a local path."""
    return location.split("://", 1)[0].lower() in ("http", "https", "ftp", "file") and "://" in location


def fetch(location: str, dest: Path, expected: Expected, *, progress: bool = True) -> Path:
    """Download (or copy) `location` to `dest`, verified, resuming a `dest.part` left by a failed run.

    A `dest` that already exists is verified and kept (idempotent); if it fails verification it is an
    error, because we never overwrite a file the user may have placed there on purpose.
    """
    dest = Path(dest)
    if dest.exists():
        try:
            verify(dest, expected, label=str(dest))
        except ChecksumError as err:
            raise ChecksumError(f"{err} (delete it to download it again)") from None
        logger.info("%s: present and verified", dest)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    if location.lower().startswith("file://"):  # a local mirror given as a URL: copy, no Range logic
        location = urllib.request.url2pathname(urllib.parse.urlparse(location).path)
    if is_url(location):
        _download(location, part, expected.size, progress=progress)
    else:
        _copy(Path(location), part, progress=progress)
    _promote(part, dest, expected, label=f"{dest.name} (from {location})")
    return dest


def _promote(part: Path, dest: Path, expected: Expected, *, label: str) -> None:
    """Verify ``part`` and rename it to ``dest``; a corrupt file is deleted, never resumed or trusted."""
    try:
        verify(part, expected, label=label)
    except ChecksumError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)


def _copy(src: Path, part: Path, *, progress: bool) -> None:
    if not src.is_file():
        raise FileNotFoundError(f"{src} not found (mirror directory lacks {src.name})")
    bar = _bar(src.stat().st_size, 0, src.name, progress)
    with open(src, "rb") as fin, open(part, "wb") as fout, bar:
        while chunk := fin.read(_CHUNK):
            fout.write(chunk)
            bar.update(len(chunk))


def _bar(total: int | None, initial: int, name: str, progress: bool) -> tqdm:
    # disable=None: the bar shows on a terminal and stays out of logs and test output.
    return tqdm(
        total=total,
        initial=initial,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=name,
        disable=None if progress else True,
        leave=False,
    )


def _download(url: str, part: Path, size: int | None, *, progress: bool) -> None:
    """HTTP(S) GET into `part`, continuing an existing `part` with a Range request."""
    have = part.stat().st_size if part.exists() else 0
    if size is not None and have > size:
        part.unlink()
        have = 0
    if size is not None and have == size:
        return  # complete already; the caller verifies it
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=_TIMEOUT_S)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:
            return  # nothing left past what we have: the .part is complete (verified by the caller)
        raise OSError(f"download of {url} failed: HTTP {err.code} {err.reason}") from err
    except urllib.error.URLError as err:
        raise OSError(f"download of {url} failed: {err.reason}") from err
    with response:
        status = getattr(response, "status", 200)
        if have and status == 206:
            start = _content_range_start(response.headers.get("Content-Range", ""))
            if start != have:
                raise OSError(f"{url}: server resumed at byte {start}, expected {have}")
            mode = "ab"
            logger.info("%s: resuming at byte %d", url, have)
        else:
            # The server ignored the Range header (status 200): start again from byte 0.
            mode, have = "wb", 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else size
        with open(part, mode) as f, _bar(total, have, Path(part.name).stem, progress) as bar:
            while chunk := response.read(_CHUNK):
                f.write(chunk)
                bar.update(len(chunk))


def _content_range_start(value: str) -> int:
    """The first byte of a `Content-Range: bytes START-END/TOTAL` header (-1 if unparsable)."""
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return -1


def check_member_name(name: str, target: Path) -> Path:
    """Where a member would land under `target`; raise UnsafeArchiveError if outside it."""
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or (posix.parts and ":" in posix.parts[0]) or ".." in posix.parts:
        raise UnsafeArchiveError(f"refusing archive member {name!r}: it would land outside {target}")
    root = target.resolve()
    dest = (root / posix).resolve()
    if dest != root and root not in dest.parents:
        raise UnsafeArchiveError(f"refusing archive member {name!r}: it would land outside {target}")
    return dest


def safe_extract(
    archive: Path, target: Path, members: dict[str, tuple[str, Expected]] | None = None
) -> dict[str, Path]:
    """Extract a zip archive into `target`, refusing it whole if any member name is unsafe.

    `members` maps a member path to (file name in target, expected size/hashes); a member path that is
    not in the archive is matched by its base name, since mirrors repack zips with other folder names.
    With `members=None` every file is extracted under its own path. Each file goes through `.part`,
    is verified, then renamed. Returns {member path: extracted path}.
    """
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive) as zf:
        names = [info.filename for info in zf.infolist()]
        for name in names:  # all first: nothing is written from an archive that is refused
            check_member_name(name, target)
        if members is None:
            members = {n: (n, Expected()) for n in names if not n.endswith("/")}
        out: dict[str, Path] = {}
        for member, (filename, expected) in members.items():
            found = _find_member(names, member, archive)
            dest = check_member_name(filename, target)
            dest.parent.mkdir(parents=True, exist_ok=True)
            part = dest.with_name(dest.name + ".part")
            with zf.open(found) as fin, open(part, "wb") as fout:
                shutil.copyfileobj(fin, fout, _CHUNK)
            _promote(part, dest, expected, label=f"{filename} (extracted from {archive.name})")
            out[member] = dest
    return out


def _find_member(names: list[str], member: str, archive: Path) -> str:
    if member in names:
        return member
    base = PurePosixPath(member).name
    matches = [n for n in names if PurePosixPath(n).name == base]
    if len(matches) != 1:
        raise FileNotFoundError(f"{archive}: expected one member named {base!r}, found {matches or 'none'}")
    return matches[0]
