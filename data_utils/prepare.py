"""Download, verify, extract and prepare corpora: `python -m data_utils.prepare [DATASET ...]`.

Output per dataset, in `<data-dir>/<name>/`:
- `raw/`: the verified archive and the verified extracted source files (kept, so that another protocol
  can be prepared later without a download);
- `train.npy`, `valid.npy`, `test.npy`: flat token ids in the smallest fitting unsigned type;
- `vocab.json` (`Vocab.to_dict()`), and `meta.json`, written last: its presence marks a finished
  preparation, so an interrupted run is never mistaken for a finished one. It records the size, sha256
  and stat signature of every file above (`data_utils.fingerprint`): a file edited later no longer
  matches, and the next `getdata.sh` prepares the dataset again instead of saying "nothing to do".
  Its `sources` say what each source file was checked against (`checked`: the published values it
  matched; `extracted_from`: the archive whose published hash matched, when it came out of one).

Each preparation builds its files in a temporary folder beside the dataset (`.<name>.build-<pid>`) and
moves them into place while holding the dataset's lock (`.<name>.lock` beside it, naming its holder): a
second preparation of the same name waits for the first, then finds the result prepared (or prepares
its own settings after it), so two preparations never mix their files. Downloads stay in `raw/`.

Offline, a registry dataset comes from `--mirror DIR`: a folder holding its archive (checked against
the archive's published hash), or the files extracted from it (for WikiText `wiki.train.tokens`,
`wiki.valid.tokens`, `wiki.test.tokens`, directly in DIR or in DIR/wikitext-2/ as unzip leaves them).
No hash of WikiText's extracted files is published, so those are checked against their published line
and token counts (see datasets.py), and meta.json says so. Files copied into `raw/` by hand are checked
the same way; a file that does not match is refused, never prepared under the dataset's name.

Protocols (the name is stored in meta.json):
- enwik8 `txl` (default): Transformer-XL's. Split bytes [0, 90M) / [90M, 95M) / [95M, 100M), then drop
  the newline bytes (10) of every split. The vocabulary is the set of bytes that occur in the three
  splits (204 on the full file), ordered by descending frequency over train + valid + test; ties are
  broken by first occurrence in that concatenated stream. This is exactly the order Transformer-XL's
  `Vocab` builds (a `Counter` filled in stream order, then a stable sort by count).
- enwik8 `bytes`: every byte kept, 256-entry vocabulary, id == byte value.
- text8 `txl` (default): the same split; like Transformer-XL's `prep_text8.py`, each split is stripped
  of leading/trailing whitespace (text8 starts with a space, so train loses one character). 27 symbols
  ordered as for enwik8 `txl`. `chars` keeps every character of each split.
- wikitext-2 / -103 `txl`: whitespace tokens (`str.split()`), `<eos>` after every line (empty lines
  too). The vocabulary is `<eos>` (id 0, as Transformer-XL's special symbol) followed by the training
  split's tokens by descending frequency, ties by first occurrence (`<unk>` is one of them: WikiText's
  text holds it). A valid/test token missing from it maps to `<unk>`. `wikitext-2-sample` is the same
  protocol on the bundled real WikiText-2 validation file, cut by lines into train/valid/test.
- `text`: a user file (split 90/5/5) or separate `--train/--valid/--test` files, as bytes (`bytes`,
  default), with enwik8's `txl` rules, or as words (`words`: the wikitext protocol, with `--min-count`;
  one `--input` file is cut at line ends by shares of its tokens).
"""

from __future__ import annotations

import argparse
import array
import bisect
import contextlib
import errno
import functools
import glob
import itertools
import json
import logging
import os
import shutil
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from .startup import heavy_imports, interruption, stop_on_signals

with heavy_imports():  # numpy: a missing requirement or a Ctrl-C meanwhile is one line
    import numpy as np

    from . import download
    from .corpus import SPLITS
    from .datasets import DEFAULT_DATASETS, REGISTRY, DatasetSpec, Expected, Source
    from .fingerprint import PREPARED_FILES, changed, fingerprint, stat_signature
    from .locking import HolderLock, describe
    from .vocab import EOS, UNK, Vocab

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MIRROR_ENV = "INFINIATTENTION_MIRROR"
TEXT_PROTOCOLS = ("bytes", "txl", "words")
_NEWLINE = 10
_WHITESPACE = frozenset(b" \t\n\r\x0b\x0c")
_SCAN = 1 << 22


# ----------------------------------------------------------------------------------------------
# Sources: download/copy, verify, extract.


def source_location(base: str, filename: str) -> str:
    """`filename` under a base URL or a local directory."""
    if download.is_url(base):
        return base.rstrip("/") + "/" + filename
    return str(Path(base) / filename)


def ensure_sources(
    spec: DatasetSpec, raw_dir: Path, mirror: str | None = None, *, progress: bool = True
) -> dict[str, tuple[Path, dict]]:
    """Verified source files of a dataset: {file name: (path, measured size, hashes and counts)}.

    Extracted files already in `raw_dir` are re-verified and reused; otherwise, when `mirror` is a local
    folder that holds the extracted files but not the archive, they are copied in, verified; otherwise
    the archive is fetched (from `mirror` if given, else from each of the registry's base URLs in turn),
    verified and extracted. Each record's `checked` names the published values the file matched, and
    `extracted_from` the archive (whose published hash matched) when it came out of one now.
    """
    if spec.local_dir is not None:  # bundled: verify in place, never copy or download
        out = {}
        for src in spec.sources:
            path = spec.local_dir / src.member
            if not path.is_file():
                raise FileNotFoundError(f"{path} not found: the bundled sample is part of the repository")
            out[src.filename] = (path, download.verify(path, src.expected, label=str(path)))
        return out

    present = {src.filename: raw_dir / src.filename for src in spec.sources}
    if all(p.is_file() for p in present.values()):
        logger.info("%s: source files present in %s; verifying", spec.name, raw_dir)
        return {src.filename: (present[src.filename], _verify_present(present[src.filename], src))
                for src in spec.sources}
    if spec.archive is None:
        raise ValueError(f"registry entry {spec.name!r} has neither an archive nor a local_dir")
    extracted_elsewhere = extracted_files(spec, mirror)
    if extracted_elsewhere is not None:
        return _copy_extracted(spec, extracted_elsewhere, raw_dir, progress=progress)
    archive = _fetch_archive(spec, raw_dir, mirror, progress=progress)
    members = {src.member: (src.filename, src.expected) for src in spec.sources}
    extracted = download.safe_extract(archive, raw_dir, members)
    out = {}
    for src in spec.sources:
        path = extracted[src.member]
        out[src.filename] = (path, {**download.verify(path, src.expected), "extracted_from": archive.name})
    return out


def _verify_present(path: Path, src: Source) -> dict:
    try:
        return download.verify(path, src.expected)
    except download.ChecksumError as err:
        raise download.ChecksumError(f"{err}: delete it, or put the published file there") from None


def extracted_files(spec: DatasetSpec, mirror: str | None) -> dict[str, Path] | None:
    """The source files of `spec` in a local `mirror` folder that holds them extracted instead of the
    archive: each at its path inside the archive (`wikitext-2/wiki.train.tokens`, as unzip leaves it)
    or directly in the folder. None when `mirror` is no such folder, or holds the archive (whose
    published hash is the stronger check)."""
    if not mirror or download.is_url(mirror) or not Path(mirror).is_dir():
        return None
    folder = Path(mirror)
    if spec.archive is not None and (folder / spec.archive.name).is_file():
        return None
    found = {}
    for src in spec.sources:
        candidates = [p for p in (folder / src.member, folder / src.filename) if p.is_file()]
        if not candidates:
            return None
        found[src.filename] = candidates[0]
    return found


def _copy_extracted(
    spec: DatasetSpec, files: Mapping[str, Path], raw_dir: Path, *, progress: bool
) -> dict[str, tuple[Path, dict]]:
    """Copy extracted source files into `raw_dir`, each verified against what is published for it (a
    file with nothing published would be taken on trust, so it is refused)."""
    out = {}
    for src in spec.sources:
        if src.expected == Expected():
            raise download.ChecksumError(
                f"{spec.name}: nothing is published to check an extracted {src.filename} against: give the "
                f"archive {spec.archive.name if spec.archive else ''} instead (--mirror DIR holding it)")
        logger.info("%s: copying the extracted %s", spec.name, files[src.filename])
        dest = download.fetch(str(files[src.filename]), raw_dir / src.filename, src.expected,
                              progress=progress)
        out[src.filename] = (dest, download.verify(dest, src.expected))
    return out


def describe_checks(filename: str, info: Mapping) -> str:
    """What a verified source file is known to match, for the log (meta.json keeps the same record)."""
    origin = f", extracted from {info['extracted_from']} (its published hash matched)" \
        if "extracted_from" in info else ""
    if not info.get("checked"):
        return f"{filename}: no published value to check it against{origin}"
    return f"{filename} matches the published {', '.join(info['checked'])}{origin}"


def _fetch_archive(spec: DatasetSpec, raw_dir: Path, mirror: str | None, *, progress: bool) -> Path:
    assert spec.archive is not None
    bases = [mirror] if mirror else list(spec.base_urls)
    dest = raw_dir / spec.archive.name
    errors = []
    for base in bases:
        location = source_location(base, spec.archive.name)
        logger.info("%s: fetching %s", spec.name, location)
        try:
            return download.fetch(location, dest, spec.archive.expected, progress=progress)
        except OSError as err:  # try the next location; hash errors propagate
            logger.warning("%s: %s", spec.name, err)
            errors.append(f"{location}: {err}")
    files = ", ".join(src.filename for src in spec.sources)
    raise OSError(
        f"{spec.name}: could not fetch {spec.archive.name} ("
        + "; ".join(errors)
        + f"). Use --mirror URL_OR_DIR (or ${MIRROR_ENV}) to point at a copy of it, or --mirror DIR at a "
        f"folder holding the files extracted from it ({files})."
    )


# ----------------------------------------------------------------------------------------------
# Protocols: source files -> (splits, vocabulary).


def frequency_order(parts: Sequence[np.ndarray]) -> list[int]:
    """Byte values present in `parts`, by descending count, ties by first occurrence in the
    concatenation of `parts` (Transformer-XL's order: a Counter filled in stream order, stable sort)."""
    counts = np.zeros(256, dtype=np.int64)
    for part in parts:
        counts += np.bincount(part, minlength=256)
    present = np.flatnonzero(counts)
    unseen = np.iinfo(np.int64).max
    first = np.full(256, unseen, dtype=np.int64)
    offset, found = 0, 0
    for part in parts:
        for lo in range(0, len(part), _SCAN):
            if found == len(present):
                break
            chunk = part[lo : lo + _SCAN]
            new = np.flatnonzero((np.bincount(chunk, minlength=256) > 0) & (first == unseen))
            for v in new:
                first[v] = offset + lo + int(np.argmax(chunk == v))
            found += len(new)
        offset += len(part)
    return sorted(present.tolist(), key=lambda v: (-int(counts[v]), int(first[v])))


def _strip(part: np.ndarray) -> np.ndarray:
    """`bytes.strip()` on an array view, without copying it."""
    lo, hi = 0, len(part)
    while lo < hi and int(part[lo]) in _WHITESPACE:
        lo += 1
    while hi > lo and int(part[hi - 1]) in _WHITESPACE:
        hi -= 1
    return part[lo:hi]


def byte_splits(data: np.ndarray, bounds: Sequence[int]) -> list[np.ndarray]:
    """Views [0, b0), [b0, b1), [b1, b2) of a byte array; the bounds must fit the data exactly."""
    train_end, valid_end, test_end = bounds
    if not 0 < train_end < valid_end < test_end == len(data):
        raise ValueError(f"split bounds {tuple(bounds)} do not fit {len(data)} bytes")
    return [data[:train_end], data[train_end:valid_end], data[valid_end:test_end]]


def prepare_bytes(parts: list[np.ndarray], protocol: str) -> tuple[list[np.ndarray], Vocab]:
    """Byte-level protocols `txl` (newlines dropped, vocabulary of observed bytes) and `bytes`."""
    if protocol == "bytes":
        return [np.asarray(p, dtype=np.uint8) for p in parts], Vocab("byte", range(256))
    if protocol != "txl":
        raise ValueError(f"unknown byte protocol {protocol!r}")
    parts = [p[p != _NEWLINE] for p in parts]
    vocab = Vocab("byte", frequency_order(parts))
    table = vocab.byte_table().astype(vocab.dtype())
    return [table[p] for p in parts], vocab


def prepare_chars(parts: list[np.ndarray], protocol: str) -> tuple[list[np.ndarray], Vocab]:
    """Character protocols for text8 (ASCII): `txl` strips each split's ends, `chars` keeps them."""
    if protocol == "txl":
        parts = [_strip(p) for p in parts]
    elif protocol != "chars":
        raise ValueError(f"unknown character protocol {protocol!r}")
    order = frequency_order(parts)
    if any(v >= 128 for v in order):
        raise ValueError("a character corpus must be ASCII (text8 is a-z and space)")
    vocab = Vocab("char", [chr(v) for v in order])
    table = np.zeros(256, dtype=vocab.dtype())
    table[order] = np.arange(len(order))
    return [table[p] for p in parts], vocab


def word_vocab(train_lines: Iterable[str], min_count: int = 1) -> Vocab:
    """The vocabulary of a word-level training split: `<eos>` (id 0, Transformer-XL's special symbol),
    then the words seen at least `min_count` times by descending count, ties by first occurrence, and
    `<unk>`.

    The words below `min_count` are `<unk>` in every split, so `<unk>` ranks with their counts added to
    its own (an `<unk>` already in the text is that same symbol); it comes last when the training split
    has none, since valid and test words unseen in training still need it. With `min_count` 1 on
    WikiText, whose text holds `<unk>`, this is exactly Transformer-XL's order.
    """
    counter: Counter[str] = Counter()
    for line in train_lines:
        counter.update(line.split())
    counts: dict[str, int] = {}
    for word, n in counter.items():  # in order of first occurrence
        kept = word if n >= min_count or word == EOS else UNK
        counts[kept] = counts.get(kept, 0) + n
    counts.pop(EOS, None)  # a literal "<eos>" in the text is the line end's id
    ranked = sorted(counts, key=counts.__getitem__, reverse=True)  # stable: ties keep first occurrence
    return Vocab("word", [EOS, *ranked, *([] if UNK in counts else [UNK])])


def word_ids(lines: Iterable[str], vocab: Vocab) -> np.ndarray:
    """Ids of the `str.split()` words of each line, then `<eos>`; a word outside `vocab` is `<unk>`."""
    index, eos, unk = vocab.index, vocab.index[EOS], vocab.index[UNK]
    ids = array.array("I")
    for line in lines:
        ids.extend([index.get(word, unk) for word in line.split()])
        ids.append(eos)
    return np.frombuffer(ids, dtype=np.uint32).astype(vocab.dtype(), copy=False)


LineSource = Callable[[], Iterator[str]]


def _line_range(path: Path, start: int, stop: int) -> Iterator[str]:
    return itertools.islice(download.text_lines(path), start, stop)


def line_splits(path: Path, bounds: Sequence[int]) -> list[LineSource]:
    """The line ranges [0, b0), [b0, b1), [b1, b2) of one text file; the bounds must fit its lines exactly."""
    n = sum(1 for _ in download.text_lines(path))
    train_end, valid_end, test_end = bounds
    if not 0 < train_end < valid_end < test_end == n:
        raise ValueError(f"split bounds {tuple(bounds)} do not fit the {n} lines of {path}")
    return [functools.partial(_line_range, path, lo, hi)
            for lo, hi in ((0, train_end), (train_end, valid_end), (valid_end, test_end))]


def word_line_bounds(path: Path, fractions: Sequence[float]) -> tuple[int, int, int]:
    """Line bounds that cut a text file into `fractions` of its tokens (words plus one `<eos>` per line):
    each of train and valid ends at the first line end at or past its share, so no line is cut."""
    ends = list(itertools.accumulate(len(line.split()) + 1 for line in download.text_lines(path)))
    total = ends[-1] if ends else 0
    train_end = bisect.bisect_left(ends, fractions[0] * total) + 1
    valid_end = bisect.bisect_left(ends, (fractions[0] + fractions[1]) * total) + 1
    if not 0 < train_end < valid_end < len(ends):
        raise ValueError(f"{path} has {len(ends)} line(s): too few to cut into {list(fractions)} of its "
                         "words at line ends; give --train/--valid/--test files, or other --fractions")
    return train_end, valid_end, len(ends)


def prepare_words(
    paths: Sequence[Path], *, min_count: int = 1, line_bounds: Sequence[int] | None = None
) -> tuple[list[np.ndarray], Vocab]:
    """Word-level protocol (WikiText's, as Transformer-XL reads it): `str.split()` words plus `<eos>` per
    line, the vocabulary from the training split (`word_vocab`), other words `<unk>`. The splits are the
    three files `paths`, or with `line_bounds` the line ranges of the one file `paths[0]`."""
    if line_bounds is not None:
        splits = line_splits(paths[0], line_bounds)
    else:
        splits = [functools.partial(download.text_lines, path) for path in paths]
    vocab = word_vocab(splits[0](), min_count)
    return [word_ids(lines(), vocab) for lines in splits], vocab


# ----------------------------------------------------------------------------------------------
# Writing and the "already prepared" check.


def is_disk_full(err: BaseException) -> bool:
    """No space left, a quota, or the file-size limit (RLIMIT_FSIZE)."""
    return isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """A failed write names its file. numpy's own writer reports a full disk without an errno ("Not
    enough free space to write N bytes after offset 128", "N requested and M written"): it is one."""
    try:
        yield
    except OSError as err:
        if err.errno is None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from err
        if err.filename is None:
            err.filename = str(path)
        raise


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with _writing(path), open(path, "wb") as f:
        np.save(f, np.ascontiguousarray(arr))


def _save_json(path: Path, obj: dict) -> None:
    part = path.with_name(path.name + ".part")
    with _writing(part):
        part.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(part, path)


@contextlib.contextmanager
def dataset_lock(out_dir: Path) -> Iterator[None]:
    """Hold the lock of dataset folder `out_dir` (the file `.<name>.lock` beside it), waiting (with a
    line naming the holder's PID) while another preparation of the same name holds it. Build folders
    that killed preparations left behind are removed: no one else can be building now."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    lock = HolderLock(out_dir.parent / f".{out_dir.name}.lock")
    lock.acquire(on_wait=lambda holder: logger.info(
        "%s is being prepared by %s: waiting for it to finish", out_dir, describe(holder)))
    try:
        for stale in out_dir.parent.glob(f".{glob.escape(out_dir.name)}.build-*"):
            shutil.rmtree(stale, ignore_errors=True)
        yield
    finally:
        lock.release()


def write_prepared(out_dir: Path, splits: Sequence[np.ndarray], vocab: Vocab, meta: dict) -> dict:
    """Build the three splits and vocab.json in a folder beside `out_dir`, move them into `out_dir`, then
    write meta.json (last: it marks the folder as complete) with every file's digest record.

    The caller holds `dataset_lock(out_dir)`, so no other preparation moves files in meanwhile.
    """
    build = out_dir.parent / f".{out_dir.name}.build-{os.getpid()}"
    build.mkdir(parents=True)
    try:
        dtype = vocab.dtype()
        for name, arr in zip(SPLITS, splits, strict=True):
            _save_npy(build / f"{name}.npy", arr.astype(dtype, copy=False))
        _save_json(build / "vocab.json", vocab.to_dict())
        digests = fingerprint(build)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "meta.json").unlink(missing_ok=True)
        for name in PREPARED_FILES:
            os.replace(build / name, out_dir / name)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    # The stat signature after the move (a rename changes ctime): the one a reader will see.
    files = {name: {**digests[name], "stat": stat_signature(out_dir / name)} for name in PREPARED_FILES}
    meta = {
        "format_version": FORMAT_VERSION,
        **meta,
        "tokens": {name: int(len(arr)) for name, arr in zip(SPLITS, splits, strict=True)},
        "vocab_size": len(vocab),
        "vocab_kind": vocab.kind,
        "vocab_digest": vocab.digest(),
        "dtype": dtype.name,
        "files": files,
    }
    _save_json(out_dir / "meta.json", meta)
    return meta


def _read_meta(out_dir: Path) -> dict | None:
    meta_path = out_dir / "meta.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return meta if isinstance(meta, dict) else None


def _files_problem(out_dir: Path, meta: dict) -> str | None:
    """Why the prepared files of `out_dir` cannot be trusted (None when they match meta.json's digests)."""
    missing = [name for name in PREPARED_FILES if not (out_dir / name).is_file()]
    if missing:
        return f"{out_dir / missing[0]} is missing"
    recorded = meta.get("files")
    if not isinstance(recorded, dict):
        return f"{out_dir / 'meta.json'} records no file digests (prepared by an older version)"
    if set(recorded) != set(PREPARED_FILES):
        return f"{out_dir / 'meta.json'} records other files than {', '.join(PREPARED_FILES)}"
    edited = changed(recorded, fingerprint(out_dir, trusted=[recorded]))
    if edited:
        return f"{out_dir / edited[0]} changed since it was prepared (its sha256 differs)"
    return None


def _registry_problem(out_dir: Path, spec: DatasetSpec, protocol: str) -> str | None:
    """Why `out_dir` is not a finished preparation of `spec` with `protocol` and today's settings
    (format version, split bounds, the source hashes the registry expects, where it knows them, and
    files that still match their digests); "" when it was never prepared; None when it is prepared."""
    meta = _read_meta(out_dir)
    if meta is None:
        return ""
    if (
        meta.get("format_version") != FORMAT_VERSION
        or meta.get("dataset") != spec.name
        or meta.get("protocol") != protocol
        or meta.get("split_bounds") != (list(spec.split_bounds) if spec.split_bounds else None)
    ):
        return f"{out_dir} holds another protocol or version"
    sources = meta.get("sources", {})
    for src in spec.sources:
        got = sources.get(src.filename)
        if got is None:
            return f"{out_dir} was prepared from other sources"
        for key in ("size", "sha256", "md5", "lines", "tokens"):
            want = getattr(src.expected, key)
            if want is not None and got.get(key) != want:
                return f"{out_dir} was prepared from other sources"
    return _files_problem(out_dir, meta)


def is_prepared(out_dir: Path, spec: DatasetSpec, protocol: str) -> bool:
    """True when `out_dir` holds a finished preparation of `spec` with `protocol` and today's settings,
    whose files still match the digests in its meta.json."""
    return _registry_problem(out_dir, spec, protocol) is None


def _text_problem(out_dir: Path, settings: dict) -> str | None:
    """As `_registry_problem`, for a user's text prepared with `settings` (protocol, sources, fractions)."""
    meta = _read_meta(out_dir)
    if meta is None:
        return ""
    if meta.get("format_version") != FORMAT_VERSION or any(meta.get(k) != v for k, v in settings.items()):
        return f"{out_dir} was prepared from other files or settings"
    return _files_problem(out_dir, meta)


def _nothing_to_do(what: str, out_dir: Path) -> None:
    logger.info("%s: already prepared in %s; nothing to do", what, out_dir)


def _must_prepare(out_dir: Path, what: str, problem: Callable[[], str | None], force: bool) -> bool:
    """Whether `out_dir` must be prepared now (the caller holds its lock): not when it is prepared already,
    by an earlier run or by the preparation this one waited for, unless `force`. Says why it is."""
    if force:
        return True
    why = problem()
    if why is None:
        _nothing_to_do(what, out_dir)
        return False
    if why:
        logger.info("%s: %s: preparing again", what, why)
    return True


# ----------------------------------------------------------------------------------------------
# Entry points.


def prepare_dataset(
    name: str,
    data_dir: str | os.PathLike = "data",
    *,
    protocol: str | None = None,
    mirror: str | None = None,
    registry: Mapping[str, DatasetSpec] | None = None,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Download (if needed), verify, extract and prepare one registry dataset; return its folder.

    A second call with everything in place does nothing but say so. `registry` replaces the module's
    REGISTRY (tests use it to point at small archives with their own hashes and split bounds).
    """
    registry = REGISTRY if registry is None else registry
    if name not in registry:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(registry)}, text")
    spec = registry[name]
    protocol = protocol or spec.default_protocol
    if protocol not in spec.protocols:
        raise ValueError(f"{name} has no protocol {protocol!r}; valid protocols: {', '.join(spec.protocols)}")
    out_dir = Path(data_dir) / name
    what = f"{name} (protocol {protocol})"

    def problem() -> str | None:
        return _registry_problem(out_dir, spec, protocol)

    if not force and problem() is None:  # nothing to write, so no lock (the data folder may be read-only)
        _nothing_to_do(what, out_dir)
        return out_dir
    with dataset_lock(out_dir):
        if not _must_prepare(out_dir, what, problem, force):
            return out_dir
        sources = ensure_sources(spec, out_dir / "raw", mirror, progress=progress)
        for filename, (_, info) in sources.items():
            logger.info("%s: %s", name, describe_checks(filename, info))
        logger.info("%s: preparing protocol %s", name, protocol)
        paths = [sources[src.filename][0] for src in spec.sources]
        if spec.kind == "words":
            splits, vocab = prepare_words(paths, line_bounds=spec.split_bounds)
        else:
            data = np.fromfile(paths[0], dtype=np.uint8)
            parts = byte_splits(data, spec.split_bounds)
            splits, vocab = (prepare_bytes if spec.kind == "bytes" else prepare_chars)(parts, protocol)
        meta = write_prepared(
            out_dir,
            splits,
            vocab,
            {
                "dataset": name,
                "protocol": protocol,
                "kind": spec.kind,
                "split_bounds": list(spec.split_bounds) if spec.split_bounds else None,
                "sources": {fn: info for fn, (_, info) in sources.items()},
                "licence": spec.licence,
            },
        )
    logger.info("%s: %s tokens, vocabulary %d -> %s", name, meta["tokens"], meta["vocab_size"], out_dir)
    return out_dir


def prepare_text(
    name: str,
    data_dir: str | os.PathLike = "data",
    *,
    input_path: str | os.PathLike | None = None,
    train: str | os.PathLike | None = None,
    valid: str | os.PathLike | None = None,
    test: str | os.PathLike | None = None,
    fractions: Sequence[float] = (0.9, 0.05, 0.05),
    protocol: str = "bytes",
    min_count: int | None = None,
    force: bool = False,
) -> Path:
    """Prepare a user's text as a corpus `data_dir/name`.

    Either one `input_path` file, cut in `fractions` (default 90/5/5), or three files `train`, `valid`,
    `test`. Protocols: `bytes` (default) and `txl` (enwik8's rules) cut by bytes, which may split a
    multi-byte character (a byte model does not mind); `words` is WikiText's word level
    (`prepare_words`), cut at line ends by shares of the tokens, with the vocabulary of the training
    split: words seen fewer than `min_count` (default 1) times there, and words it lacks, are `<unk>`.
    """
    if protocol not in TEXT_PROTOCOLS:
        raise ValueError(f"text has no protocol {protocol!r}; valid protocols: {', '.join(TEXT_PROTOCOLS)}")
    if min_count is not None and protocol != "words":
        raise ValueError("--min-count applies to --protocol words only")
    min_count = 1 if min_count is None else min_count
    if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
        raise ValueError(f"--min-count must be a positive integer, got {min_count!r}")
    if name in REGISTRY or name in ("text", "samples") or not name or "/" in name:
        raise ValueError(f"--name {name!r} is not allowed: pick a new folder name for your corpus")
    separate = [train, valid, test]
    if input_path is not None and any(p is not None for p in separate):
        raise ValueError("give either --input FILE or --train/--valid/--test, not both")
    if input_path is None and not all(p is not None for p in separate):
        raise ValueError("give either --input FILE or all three of --train, --valid, --test")
    files = [Path(input_path)] if input_path is not None else [Path(p) for p in separate]
    for f in files:
        check_input_file(f)
    sources = {str(f): download.verify(f, Expected()) for f in files}
    out_dir = Path(data_dir) / name
    fractions = [float(x) for x in fractions]
    bad_split = len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-9
    if input_path is not None and bad_split:
        raise ValueError(f"split fractions must be three positive numbers summing to 1, got {fractions}")
    settings = {"protocol": protocol, "sources": sources,
                "fractions": fractions if input_path is not None else None}
    if protocol == "words":  # only here: byte corpora prepared before keep matching their meta.json
        settings["min_count"] = min_count
    what = f"{name} (protocol {protocol})"

    def problem() -> str | None:
        return _text_problem(out_dir, settings)

    if not force and problem() is None:  # nothing to write, so no lock
        _nothing_to_do(what, out_dir)
        return out_dir
    with dataset_lock(out_dir):
        if not _must_prepare(out_dir, what, problem, force):
            return out_dir
        if protocol == "words":
            bounds = word_line_bounds(files[0], fractions) if input_path is not None else None
            splits, vocab = prepare_words(files, min_count=min_count, line_bounds=bounds)
            unk = vocab.index[UNK]  # how much of each split the vocabulary does not cover
            extra = {"unk_tokens": {split: int((ids == unk).sum())
                                    for split, ids in zip(SPLITS, splits, strict=True)}}
        else:
            parts = _text_byte_parts(files, input_path is not None, fractions)
            splits, vocab = prepare_bytes(parts, protocol)
            extra = {}
        meta = write_prepared(out_dir, splits, vocab, {"dataset": name, "kind": "text", **settings, **extra})
    logger.info("%s: %s tokens%s, vocabulary %d -> %s", name, meta["tokens"],
                f" ({meta['unk_tokens']} of them <unk>)" if "unk_tokens" in meta else "", meta["vocab_size"],
                out_dir)
    return out_dir


def check_input_file(path: Path) -> None:
    """A user's text file must be a regular file with something in it (a device such as /dev/zero would
    be read forever, an empty file gives empty splits)."""
    if path.is_dir():
        raise ValueError(f"{path} is a folder: give a text file")
    if not path.exists():
        raise FileNotFoundError(f"{path} not found")
    if not path.is_file():
        raise ValueError(f"{path} is not a regular file (a device, pipe or socket): give a text file")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty: give a file with text in it")


def _text_byte_parts(files: Sequence[Path], one_file: bool, fractions: Sequence[float]) -> list[np.ndarray]:
    """The three byte splits of a user's text: one file cut in `fractions` of its bytes, or three files."""
    if not one_file:
        return [np.fromfile(f, dtype=np.uint8) for f in files]
    data = np.fromfile(files[0], dtype=np.uint8)
    n = len(data)
    return byte_splits(data, (int(n * fractions[0]), int(n * (fractions[0] + fractions[1])), n))


def build_parser(prog: str = "getdata.sh") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Download, verify, extract and prepare corpora into DATA_DIR/<name>/.",
        epilog="datasets: " + ", ".join(REGISTRY) + "; `text --input FILE --name NAME` for your own text "
        "(`--protocol words` for a word-level corpus)",
    )
    parser.add_argument(
        "datasets", nargs="*", metavar="DATASET", help="default: " + " ".join(DEFAULT_DATASETS)
    )
    parser.add_argument("--data-dir", default="data", help="output root (default: data)")
    parser.add_argument(
        "--mirror",
        default=os.environ.get(MIRROR_ENV) or None,
        help=f"base URL or local folder holding the archives, or a local folder holding the files extracted "
        "from them (wikitext: wiki.train.tokens, wiki.valid.tokens, wiki.test.tokens), each checked against "
        f"its published values (default: ${MIRROR_ENV}, else the registry's locations)",
    )
    parser.add_argument("--protocol", default=None,
                        help="enwik8, enwik8-sample: txl (default) | bytes; text8: txl | chars; "
                        "wikitext: txl; text: bytes (default) | txl | words")
    parser.add_argument("--force", action="store_true", help="prepare again even if already prepared")
    parser.add_argument("--no-progress", action="store_true", help="no download progress bars")
    text = parser.add_argument_group("text (your own corpus: bytes, or words with --protocol words)")
    text.add_argument("--input", help="one text file, cut by --fractions (bytes; words: at line ends, by "
                      "shares of the tokens)")
    text.add_argument("--name", help="folder name of the prepared corpus")
    text.add_argument("--train", help="training file (with --valid and --test, instead of --input)")
    text.add_argument("--valid", help="validation file (with --train and --test)")
    text.add_argument("--test", help="test file (with --train and --valid)")
    text.add_argument("--fractions", "--split", dest="split", default="0.9,0.05,0.05", metavar="T,V,T",
                      help="--input's train,valid,test fractions (default: %(default)s; --split is the "
                      "old name)")
    text.add_argument("--min-count", type=int, default=None, metavar="N",
                      help="--protocol words: words seen fewer than N times in the training split become "
                      "<unk>, as do valid/test words it lacks (default: 1, every training word kept)")
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "getdata.sh") -> int:
    """CLI entry point (`getdata.sh`): one `error:` line for every mistake, failure or interruption."""
    logging.basicConfig(level=logging.INFO, format="[getdata] %(message)s")
    args = build_parser(prog).parse_args(argv)
    try:
        with stop_on_signals():
            _prepare(args)
    except (ValueError, OSError) as err:
        logger.error("error: %s", _describe(err, args.data_dir))
        return _exit_status(err)
    except KeyboardInterrupt as err:  # Ctrl-C, SIGTERM or SIGHUP: build folders go, finished ones stay
        what, code = interruption(err)
        logger.error("error: %s; nothing half-written was kept: run the same command again to finish the "
                     "preparation", what)
        return code
    return 0


def _prepare(args: argparse.Namespace) -> None:
    """What the command line asks for: the user's text, or registry datasets."""
    names = args.datasets or list(DEFAULT_DATASETS)
    if "text" in names:
        if names != ["text"] or not args.name:
            raise ValueError("usage: getdata.sh text --input FILE (or --train F --valid F --test F) "
                             "--name NAME [--protocol words] (text cannot be combined with others)")
        prepare_text(
            args.name,
            args.data_dir,
            input_path=args.input,
            train=args.train,
            valid=args.valid,
            test=args.test,
            fractions=_fractions(args.split),
            protocol=args.protocol or "bytes",
            min_count=args.min_count,
            force=args.force,
        )
        return
    if args.min_count is not None:
        raise ValueError("--min-count applies to `text --protocol words` (a registry dataset's "
                         "vocabulary is its protocol's)")
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise ValueError(f"unknown dataset(s) {', '.join(unknown)}; valid: {', '.join(REGISTRY)}, text")
    for name in names:
        prepare_dataset(
            name,
            args.data_dir,
            protocol=args.protocol,
            mirror=args.mirror,
            force=args.force,
            progress=not args.no_progress,
        )


def _describe(err: Exception, data_dir: str) -> str:
    """The error line's text: a full disk (numpy's short writes carry no errno) in train.py's words."""
    if isinstance(err, OSError) and is_disk_full(err):
        why = "" if err.errno == errno.ENOSPC else f" ({os.strerror(err.errno)})"
        return (f"no space left on device{why} while writing {err.filename or data_dir}: free some space and "
                "run the same command again")
    return str(err)


def _exit_status(err: Exception) -> int:
    """2 for a mistake in the command (as train.py: an unknown dataset, a missing input file, bad
    fractions); 1 when the data failed its checks or a download or the disk failed."""
    if isinstance(err, (download.ChecksumError, download.UnsafeArchiveError)):
        return 1
    return 2 if isinstance(err, (ValueError, FileNotFoundError)) else 1


def _fractions(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise ValueError(f"--fractions {text!r}: give three numbers such as 0.9,0.05,0.05") from None


def console() -> None:
    """The installed `infini-getdata` command (getdata.sh without a checkout)."""
    sys.exit(main(prog="infini-getdata"))


if __name__ == "__main__":
    sys.exit(main())
