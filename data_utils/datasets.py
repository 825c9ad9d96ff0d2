"""The datasets registry: where each corpus comes from, how to check it, and how it is split.

One table (`REGISTRY`) holds everything that is specific to a dataset. The download, verification and
preparation code in `download.py` / `prepare.py` is generic and reads only this table, so a test (or an
air-gapped cluster with its own copies) can swap an entry with `dataclasses.replace` and
`monkeypatch.setitem(REGISTRY, name, entry)`, or pass its own registry mapping to `prepare_dataset`.

Published sizes and hashes come from Matt Mahoney's page (enwik8, text8), from values that many
independent repositories agree on (the sha256 values), and from torchtext (the wikitext zip MD5s); see
`../shared/data/README.md` of the project for the sources.

WikiText's extracted files (`wiki.{train,valid,test}.tokens`) have no published hash: only the zips'
MD5s are published (torchtext), and the sha256 values that circulate belong to re-distributed copies
(pytorch/examples' `word_language_model/data/wikitext-2/*.txt`) that could not be compared with the
zip's members offline, so they are not used. What is published for the extracted files is checked
instead: their line counts (torchtext's NUM_LINES) and token counts (the WikiText paper, Merity et al.
2016, Table 1: whitespace words plus one `<eos>` per line). The bundled copy of WikiText-2's
validation file (data/samples/wiki.valid.tokens, from pytorch/examples) matches both. Counts catch a
wrong, truncated or re-tokenised file; they cannot prove the bytes equal the archive's, and meta.json
records which checks a preparation passed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# The repository root, for the bundled sample in data/samples/.
REPO_ROOT = Path(__file__).resolve().parent.parent


def samples_dir() -> Path:
    """The bundled sample's folder: `data_utils/samples/` when installed (`pip install .` ships
    data/samples there as package data, see pyproject.toml), else `data/samples/` of the checkout."""
    installed = Path(__file__).resolve().parent / "samples"
    return installed if installed.is_dir() else REPO_ROOT / "data" / "samples"


@dataclass(frozen=True)
class Expected:
    """What a file must look like: any of size, sha256, md5, lines, tokens that is known (None = not
    checked)."""

    size: int | None = None
    sha256: str | None = None
    md5: str | None = None
    lines: int | None = None
    """Lines of a text file, read as the word-level preparation reads it (UTF-8, universal newlines)."""
    tokens: int | None = None
    """Whitespace-separated words plus one `<eos>` per line: the WikiText paper's token count."""


@dataclass(frozen=True)
class Archive:
    """A downloadable archive: its file name under each base URL and its expected size/hashes."""

    name: str
    expected: Expected = field(default_factory=Expected)


@dataclass(frozen=True)
class Source:
    """A file the preparation reads: its path inside the archive (or on disk for local sources)."""

    member: str
    expected: Expected = field(default_factory=Expected)

    @property
    def filename(self) -> str:
        """The name the file gets in `data/<name>/raw/`: the member's base name."""
        return Path(self.member).name


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: its locations, checks, preparation kind, protocols and split.

    `kind` selects the preparation code: "bytes" (enwik8 and its sample), "chars" (text8) or "words"
    (wikitext). `split_bounds` = (train_end, valid_end, test_end) cut one source file: in bytes for
    byte/char corpora, in lines for a word corpus (whose three splits are otherwise three files):
    train = [0, train_end), valid = [train_end, valid_end), test = [valid_end, test_end).
    `local_dir` set means the sources are already on disk (the bundled sample): no archive, no network.
    """

    name: str
    kind: str
    base_urls: tuple[str, ...]
    archive: Archive | None
    sources: tuple[Source, ...]
    protocols: tuple[str, ...]
    split_bounds: tuple[int, int, int] | None = None
    local_dir: Path | None = None
    licence: str = "Wikipedia text: CC BY-SA (and GFDL for the 2006 dump)"

    @property
    def default_protocol(self) -> str:
        """The first listed protocol is the default."""
        return self.protocols[0]


_MAHONEY = ("http://mattmahoney.net/dc",)
# The original S3 bucket (research.metamind.io) is gone; smerity's mirror serves the same v1 zips.
_WIKITEXT = ("https://wikitext.smerity.com",)
_ENWIK8_SPLIT = (90_000_000, 95_000_000, 100_000_000)


# Published (lines, tokens) of wiki.{train,valid,test}.tokens (see the module docstring). Both
# WikiText-2 and WikiText-103 use the same validation and test articles.
_WT_VALID_TEST = ((3_760, 217_646), (4_358, 245_569))
_WT2_COUNTS = ((36_718, 2_088_628), *_WT_VALID_TEST)
_WT103_COUNTS = ((1_801_350, 103_227_021), *_WT_VALID_TEST)


def _wikitext_sources(folder: str, counts: tuple[tuple[int, int], ...]) -> tuple[Source, ...]:
    # No published hashes exist for the extracted .tokens files: the archive's MD5 covers them, and the
    # published line and token counts are what an extracted file given on its own is checked against.
    return tuple(
        Source(f"{folder}/wiki.{split}.tokens", Expected(lines=lines, tokens=tokens))
        for split, (lines, tokens) in zip(("train", "valid", "test"), counts, strict=True)
    )


REGISTRY: dict[str, DatasetSpec] = {
    "enwik8": DatasetSpec(
        name="enwik8",
        kind="bytes",
        base_urls=_MAHONEY,
        archive=Archive(
            "enwik8.zip",
            Expected(
                size=36_445_475,
                sha256="547994d9980ebed1288380d652999f38a14fe291a6247c157c3d33d4932534bc",
                md5=None,
            ),
        ),
        # The zip was repacked once (2006 vs 2011 sizes differ), so the extracted file is checked too.
        sources=(
            Source(
                "enwik8",
                Expected(
                    size=100_000_000,
                    sha256="2b49720ec4d78c3c9fabaee6e4179a5e997302b3a70029f30f2d582218c024a8",
                    md5="a1fa5ffddb56f4953e226637dabbb36a",
                ),
            ),
        ),
        protocols=("txl", "bytes"),
        split_bounds=_ENWIK8_SPLIT,
    ),
    "text8": DatasetSpec(
        name="text8",
        kind="chars",
        base_urls=_MAHONEY,
        archive=Archive(
            "text8.zip",
            Expected(
                size=31_344_016,
                sha256="a6640522afe85d1963ad56c05b0ede0a0c000dddc9671758a6cc09b7a38e5232",
            ),
        ),
        sources=(
            Source(
                "text8",
                Expected(
                    size=100_000_000,
                    sha256="6e890197040d37d85beb962ae1f041ff1d9a9ca8d20c7d99c85027eebf51dca7",
                ),
            ),
        ),
        protocols=("txl", "chars"),
        split_bounds=_ENWIK8_SPLIT,
    ),
    # No sha256 of the wikitext zips is published; torchtext's MD5 is checked instead.
    "wikitext-2": DatasetSpec(
        name="wikitext-2",
        kind="words",
        base_urls=_WIKITEXT,
        archive=Archive("wikitext-2-v1.zip", Expected(md5="542ccefacc6c27f945fb54453812b3cd")),
        sources=_wikitext_sources("wikitext-2", _WT2_COUNTS),
        protocols=("txl",),
        licence="WikiText (Merity et al. 2016): CC BY-SA (Wikipedia text)",
    ),
    "wikitext-103": DatasetSpec(
        name="wikitext-103",
        kind="words",
        base_urls=_WIKITEXT,
        archive=Archive("wikitext-103-v1.zip", Expected(md5="9ddaacaf6af0710eda8c456decff7832")),
        sources=_wikitext_sources("wikitext-103", _WT103_COUNTS),
        protocols=("txl",),
        licence="WikiText (Merity et al. 2016): CC BY-SA (Wikipedia text)",
    ),
    # The bundled first 10^6 bytes of enwik8 (data/samples/enwik6): prepared without any network.
    "enwik8-sample": DatasetSpec(
        name="enwik8-sample",
        kind="bytes",
        base_urls=(),
        archive=None,
        sources=(
            Source(
                "enwik6",
                Expected(
                    size=1_000_000,
                    sha256="369b688978f649681136198fb96db14c1616756260c55fb4b65e9bc049552cad",
                    md5="83a2cefd8ca00049e0445542dabd25a0",
                ),
            ),
        ),
        protocols=("txl", "bytes"),
        split_bounds=(900_000, 950_000, 1_000_000),
        local_dir=samples_dir(),
    ),
    # The bundled real WikiText-2 validation file (data/samples/wiki.valid.tokens), cut by lines at
    # article starts into about 89 / 6 / 5 % of its tokens: a word-level corpus without any network.
    "wikitext-2-sample": DatasetSpec(
        name="wikitext-2-sample",
        kind="words",
        base_urls=(),
        archive=None,
        sources=(
            Source(
                "wiki.valid.tokens",
                Expected(
                    size=1_121_681,
                    sha256="f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8",
                    lines=_WT_VALID_TEST[0][0],
                    tokens=_WT_VALID_TEST[0][1],
                ),
            ),
        ),
        protocols=("txl",),
        split_bounds=(3_347, 3_582, 3_760),
        local_dir=samples_dir(),
        licence="WikiText (Merity et al. 2016): CC BY-SA (Wikipedia text)",
    ),
}

# What `getdata.sh` prepares when no dataset is named: the four downloadable corpora.
DEFAULT_DATASETS: tuple[str, ...] = ("enwik8", "text8", "wikitext-2", "wikitext-103")
