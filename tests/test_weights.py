"""The weights downloader against a real HTTP server on 127.0.0.1, and the checkpoint helpers."""

from __future__ import annotations

import functools
import hashlib
import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from training.weights import (
    RESTORMER_DEFOCUS,
    VGG16_IMAGENET,
    KnownWeights,
    WeightsError,
    default_cache_dir,
    fetch,
    fetch_known,
    file_sha256,
    read_checkpoint,
    state_dict_mismatch,
)

PAYLOAD = bytes(range(256)) * 4096 + b"tail"  # 1 MiB + 4 bytes: more than one read chunk
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


class Handler(http.server.SimpleHTTPRequestHandler):
    """Serves files from a folder; ``/short/NAME`` announces more bytes than it sends."""

    requests: list[str]

    def do_GET(self) -> None:
        self.requests.append(self.path)
        if self.path.startswith("/short/"):
            body = (Path(self.directory) / self.path.removeprefix("/short/")).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) + 1000))
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    """An empty cache folder (apart from the served folder, which is also in tmp_path)."""
    folder = tmp_path / "cache"
    folder.mkdir()
    return folder


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path, list[str]]]:
    """(base URL, served folder, request log) of a live server on 127.0.0.1."""
    root = tmp_path / "served"
    root.mkdir()
    (root / "weights.bin").write_bytes(PAYLOAD)
    requests: list[str] = []
    handler = type("LoggedHandler", (Handler,), {"requests": requests})
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(root))
    )
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root, requests
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def assert_one_line(error: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


class TestFetch:
    def test_downloads_and_verifies(self, server, cache: Path) -> None:
        url, _, _ = server
        deep = cache / "a" / "b"
        path = fetch(f"{url}/weights.bin", deep / "w.bin", sha256=PAYLOAD_SHA, progress=True)
        assert path == deep / "w.bin"
        assert path.read_bytes() == PAYLOAD
        assert sorted(p.name for p in deep.iterdir()) == ["w.bin"]

    def test_accepts_a_hash_prefix_and_size(self, server, cache: Path) -> None:
        url, _, _ = server
        path = fetch(
            f"{url}/weights.bin",
            cache / "w.bin",
            sha256=PAYLOAD_SHA[:8].upper(),
            expected_size=len(PAYLOAD),
            progress=False,
        )
        assert file_sha256(path) == PAYLOAD_SHA

    def test_a_good_cached_file_is_not_downloaded_again(self, server, cache: Path) -> None:
        url, _, requests = server
        dest = cache / "w.bin"
        fetch(f"{url}/weights.bin", dest, sha256=PAYLOAD_SHA, progress=False)
        fetch(f"{url}/weights.bin", dest, sha256=PAYLOAD_SHA, progress=False)
        assert requests == ["/weights.bin"]

    def test_a_damaged_cached_file_is_replaced(self, server, cache: Path) -> None:
        url, _, requests = server
        dest = cache / "w.bin"
        dest.write_bytes(PAYLOAD[:100])
        fetch(f"{url}/weights.bin", dest, sha256=PAYLOAD_SHA, progress=False)
        assert dest.read_bytes() == PAYLOAD and len(requests) == 1

    def test_wrong_hash_leaves_nothing(self, server, cache: Path) -> None:
        url, _, _ = server
        with pytest.raises(WeightsError) as error:
            fetch(f"{url}/weights.bin", cache / "w.bin", sha256="0" * 64, progress=False)
        message = assert_one_line(error)
        assert f"{url}/weights.bin" in message and "not the expected file" in message
        assert "sha256" in message and "--teacher PATH" in message
        assert list(cache.iterdir()) == []

    def test_wrong_size_leaves_nothing(self, server, cache: Path) -> None:
        url, _, _ = server
        with pytest.raises(WeightsError, match=f"{len(PAYLOAD)} bytes, expected 5"):
            fetch(f"{url}/weights.bin", cache / "w.bin", expected_size=5, progress=False)
        assert list(cache.iterdir()) == []

    def test_truncated_transfer_leaves_nothing(self, server, cache: Path) -> None:
        url, _, _ = server
        with pytest.raises(WeightsError) as error:
            fetch(f"{url}/short/weights.bin", cache / "w.bin", progress=False)
        message = assert_one_line(error)
        assert f"cut short ({len(PAYLOAD)} of {len(PAYLOAD) + 1000} bytes)" in message
        assert list(cache.iterdir()) == []

    def test_http_error_is_one_line(self, server, cache: Path) -> None:
        url, _, _ = server
        with pytest.raises(WeightsError) as error:
            fetch(f"{url}/absent.bin", cache / "w.bin", progress=False, hint="use --vgg PATH")
        message = assert_one_line(error)
        assert message.startswith(f"cannot download {url}/absent.bin (HTTP Error 404: ")
        assert message.endswith("; use --vgg PATH")
        assert list(cache.iterdir()) == []

    def test_unreachable_server_is_one_line(self, cache: Path) -> None:
        url = f"http://127.0.0.1:{closed_port()}/vgg16.pth"
        known = KnownWeights(url=url, filename="v.pth", sha256=None, size=None, flag="--vgg")
        with pytest.raises(WeightsError) as error:
            fetch_known(known, cache / "new", progress=False)
        message = assert_one_line(error)
        assert message.startswith(f"cannot download {url} (")
        assert "pass the file with --vgg PATH" in message
        assert list((cache / "new").iterdir()) == []

    def test_a_failed_download_keeps_the_previous_file(self, cache: Path) -> None:
        dest = cache / "w.bin"
        dest.write_bytes(b"old")
        with pytest.raises(WeightsError):
            fetch(f"http://127.0.0.1:{closed_port()}/w", dest, sha256="ab" * 4, progress=False)
        assert dest.read_bytes() == b"old"

    def test_bad_sha256_argument(self, cache: Path) -> None:
        with pytest.raises(ValueError, match="8 to 64 hex digits"):
            fetch("http://127.0.0.1:1/x", cache / "x", sha256="xyz")

    def test_fetch_known_uses_the_cache_folder(self, server, cache: Path) -> None:
        url, _, _ = server
        known = KnownWeights(f"{url}/weights.bin", "named.bin", PAYLOAD_SHA[:8], None, "--vgg")
        assert fetch_known(known, cache, progress=False) == cache / "named.bin"


class TestKnownWeights:
    def test_vgg16_hash_agrees_with_torchvision_file_name(self) -> None:
        assert VGG16_IMAGENET.filename == "vgg16-397923af.pth"
        assert VGG16_IMAGENET.url.endswith("/" + VGG16_IMAGENET.filename)
        assert VGG16_IMAGENET.sha256 is not None and VGG16_IMAGENET.sha256.startswith("397923af")
        assert VGG16_IMAGENET.flag == "--vgg"

    def test_restormer_release(self) -> None:
        assert RESTORMER_DEFOCUS.url == (
            "https://github.com/swz30/Restormer/releases/download/v1.0/"
            "single_image_defocus_deblurring.pth"
        )
        assert RESTORMER_DEFOCUS.flag == "--teacher"


class TestCacheDir:
    def test_sharpcam_cache_wins(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        monkeypatch.setenv("SHARPCAM_CACHE", str(tmp_path / "a"))
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "b"))
        assert default_cache_dir() == tmp_path / "a"

    def test_xdg_then_home(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        monkeypatch.delenv("SHARPCAM_CACHE", raising=False)
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "b"))
        assert default_cache_dir() == tmp_path / "b" / "sharpcam"
        monkeypatch.delenv("XDG_CACHE_HOME")
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        assert default_cache_dir() == tmp_path / "home" / ".cache" / "sharpcam"


class TestReadCheckpoint:
    def test_reads_tensors(self, tmp_path: Path) -> None:
        torch.save({"a": torch.ones(2)}, tmp_path / "c.pth")
        loaded = read_checkpoint(tmp_path / "c.pth", what="thing", flag="--x")
        assert isinstance(loaded, dict) and torch.equal(loaded["a"], torch.ones(2))

    def test_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(WeightsError) as error:
            read_checkpoint(tmp_path / "no.pth", what="VGG16 checkpoint", flag="--vgg")
        assert assert_one_line(error) == (
            f"VGG16 checkpoint {tmp_path / 'no.pth'} does not exist; "
            "pass an existing file with --vgg PATH"
        )

    def test_a_folder_is_not_a_checkpoint(self, tmp_path: Path) -> None:
        with pytest.raises(WeightsError, match="is not a file; pass an existing file with --x"):
            read_checkpoint(tmp_path, what="thing", flag="--x")

    def test_not_a_checkpoint(self, tmp_path: Path) -> None:
        (tmp_path / "junk.pth").write_bytes(b"this is not a zip or a pickle\n" * 10)
        with pytest.raises(WeightsError) as error:
            read_checkpoint(tmp_path / "junk.pth", what="VGG16 checkpoint", flag="--vgg")
        message = assert_one_line(error)
        assert "is not a readable torch checkpoint" in message and "--vgg PATH" in message

    def test_refuses_arbitrary_pickles(self, tmp_path: Path) -> None:
        torch.save({"a": object.__new__(KnownWeights)}, tmp_path / "evil.pth")
        with pytest.raises(WeightsError, match="not a readable torch checkpoint"):
            read_checkpoint(tmp_path / "evil.pth", what="x", flag="--x")


class TestStateDictMismatch:
    expected = {f"k{i}": torch.Size([i + 1]) for i in range(5)}  # noqa: RUF012

    def test_match(self) -> None:
        got = {k: torch.zeros(s) for k, s in self.expected.items()}
        assert state_dict_mismatch(self.expected, got) is None

    def test_counts_and_first_names(self) -> None:
        got = {"k0": torch.zeros(9), "x1": 0, "x2": 0, "x3": 0, "x4": 0}
        assert state_dict_mismatch(self.expected, got) == (
            "4 missing keys (k1, k2, k3, ...), 4 unexpected (x1, x2, x3, ...), "
            "1 with the wrong shape (k0 [9] instead of [1])"
        )
