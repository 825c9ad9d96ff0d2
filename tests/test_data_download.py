"""download: HTTP Range resume against a real local server, .part handling, safe member names."""

from __future__ import annotations

import hashlib
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from data_utils.datasets import Expected
from data_utils.download import (
    ChecksumError,
    UnsafeArchiveError,
    check_member_name,
    fetch,
    safe_extract,
    verify,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "data"


class RangeServer(ThreadingHTTPServer):
    """Serves files from `root`, honouring `Range: bytes=N-` unless told to ignore it."""

    def __init__(self, root: Path, honour_range: bool = True) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root
        self.honour_range = honour_range
        self.requests: list[dict] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: RangeServer

    def do_GET(self) -> None:
        path = self.server.root / self.path.lstrip("/")
        header = self.headers.get("Range")
        self.server.requests.append({"range": header, "user_agent": self.headers.get("User-Agent", "")})
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        if header and self.server.honour_range:
            start = int(header.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            body = data[start:]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            body = data
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def served(tmp_path):
    """(server, payload, expected): enwik5 served over HTTP from a temporary folder."""
    root = tmp_path / "www"
    root.mkdir()
    payload = (FIXTURES / "enwik5").read_bytes()
    (root / "enwik5").write_bytes(payload)
    server = RangeServer(root)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield server, payload, Expected(size=len(payload), sha256=hashlib.sha256(payload).hexdigest())
    server.shutdown()
    server.server_close()


def test_interrupted_download_resumes_with_range(tmp_path, served):
    server, payload, expected = served
    dest = tmp_path / "out" / "enwik5"
    dest.parent.mkdir()
    dest.with_name("enwik5.part").write_bytes(payload[:40_000])
    fetch(f"{server.url}/enwik5", dest, expected, progress=False)
    assert dest.read_bytes() == payload
    assert not dest.with_name("enwik5.part").exists()
    assert [r["range"] for r in server.requests] == ["bytes=40000-"]
    assert "Mozilla/5.0" in server.requests[0]["user_agent"]


def test_server_ignoring_range_restarts_cleanly(tmp_path, served):
    server, payload, expected = served
    server.honour_range = False
    dest = tmp_path / "enwik5"
    dest.with_name("enwik5.part").write_bytes(b"x" * 1234)
    fetch(f"{server.url}/enwik5", dest, expected, progress=False)
    assert dest.read_bytes() == payload


def test_corrupt_partial_download_is_deleted(tmp_path, served):
    server, payload, expected = served
    dest = tmp_path / "enwik5"
    part = dest.with_name("enwik5.part")
    part.write_bytes(b"\0" * 10_000)  # wrong prefix: the resumed file has the right size, wrong hash
    with pytest.raises(ChecksumError, match=f"sha256 mismatch: expected {expected.sha256}, got"):
        fetch(f"{server.url}/enwik5", dest, expected, progress=False)
    assert not part.exists() and not dest.exists()
    fetch(f"{server.url}/enwik5", dest, expected, progress=False)  # the next run starts afresh
    assert dest.read_bytes() == payload


def test_complete_part_and_existing_file_need_no_request(tmp_path, served):
    server, payload, expected = served
    dest = tmp_path / "enwik5"
    dest.with_name("enwik5.part").write_bytes(payload)
    fetch(f"{server.url}/enwik5", dest, expected, progress=False)
    fetch(f"{server.url}/enwik5", dest, expected, progress=False)  # present and verified: kept
    assert server.requests == [] and dest.read_bytes() == payload


def test_range_not_satisfiable_is_a_complete_part(tmp_path, served):
    server, payload, _ = served
    dest = tmp_path / "enwik5"
    dest.with_name("enwik5.part").write_bytes(payload)
    unknown_size = Expected(sha256=hashlib.sha256(payload).hexdigest())
    fetch(f"{server.url}/enwik5", dest, unknown_size, progress=False)
    assert [r["range"] for r in server.requests] == ["bytes=100000-"]
    assert dest.read_bytes() == payload


def test_missing_remote_file_is_an_os_error(tmp_path, served):
    server, _, expected = served
    with pytest.raises(OSError, match="HTTP 404"):
        fetch(f"{server.url}/nope", tmp_path / "nope", expected, progress=False)


def test_verify_checks_md5_when_sha256_is_unknown(tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"hello")
    verify(f, Expected(md5=hashlib.md5(b"hello").hexdigest()))
    with pytest.raises(ChecksumError, match=r"f: md5 mismatch: expected 0{32}, got 5d41402a"):
        verify(f, Expected(md5="0" * 32))


@pytest.mark.parametrize("name", ["../x", "a/../../x", "/etc/passwd", "C:/x", "..\\x", "a/b/../../../x"])
def test_unsafe_member_names(tmp_path, name):
    with pytest.raises(UnsafeArchiveError):
        check_member_name(name, tmp_path)


def test_safe_extract_refuses_whole_archive(tmp_path):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("good.txt", b"ok")
        zf.writestr("/abs.txt", b"bad")  # zipfile keeps the leading slash as written
    target = tmp_path / "t"
    with pytest.raises(UnsafeArchiveError, match="abs.txt"):
        safe_extract(archive, target)
    assert not (target / "good.txt").exists()


def test_safe_extract_all_members(tmp_path):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("d/one.txt", b"1")
        zf.writestr("two.txt", b"2")
    out = safe_extract(archive, tmp_path / "t")
    assert {k: v.read_bytes() for k, v in out.items()} == {"d/one.txt": b"1", "two.txt": b"2"}


def test_existing_corrupt_file_is_an_error_with_a_hint(tmp_path, served):
    server, payload, expected = served
    dest = tmp_path / "enwik5"
    dest.write_bytes(payload[::-1])
    with pytest.raises(ChecksumError, match="delete it to download it again"):
        fetch(f"{server.url}/enwik5", dest, expected, progress=False)
    assert server.requests == []


def test_file_url_and_plain_path_are_copied(tmp_path):
    src = FIXTURES / "enwik5"
    expected = Expected(size=100_000, sha256=hashlib.sha256(src.read_bytes()).hexdigest())
    fetch(src.as_uri(), tmp_path / "a", expected, progress=False)
    fetch(str(src), tmp_path / "b", expected, progress=False)
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes() == src.read_bytes()
