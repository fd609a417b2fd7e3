"""Download against a loopback HTTP server the test starts (never the internet): progress,
Range resume after a dropped connection, size checks, hash checks, manifest, offline errors."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from pathlib import Path

import pytest

from npgpt import NpgptError
from parity import download as dl


class Server:
    """Serves ``files`` under /gpt-2/models/124M/..., honouring Range; can misbehave on demand."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.drop_after: dict[str, int] = {}  # name -> bytes to send once, then cut the connection
        self.lie_length: dict[str, int] = {}  # name -> Content-Length to announce
        self.no_length: set[str] = set()  # names served without a Content-Length
        self.statuses: dict[str, list[int]] = {}  # name -> error statuses to answer first, one per request
        self.ranges: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.rsplit("/", 1)[-1]
                if name not in server.files:
                    self.send_error(404)
                    return
                if server.statuses.get(name):
                    self.send_error(server.statuses[name].pop(0))
                    return
                body = server.files[name]
                start = 0
                if rng := self.headers.get("Range"):
                    server.ranges.append(f"{name} {rng}")
                    start = int(rng.split("=")[1].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                payload = body[start:]
                if name not in server.no_length:
                    self.send_header("Content-Length", str(server.lie_length.get(name, len(payload))))
                else:
                    self.close_connection = True  # the body ends where the connection does
                self.end_headers()
                cut = server.drop_after.pop(name, None)
                self.wfile.write(payload if cut is None else payload[:cut])
                self.wfile.flush()
                if cut is not None:
                    self.close_connection = True

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/gpt-2/models"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def files(monkeypatch):
    # small stand-ins for the seven OpenAI files; the known sizes/hashes are swapped for theirs
    content = {name: hashlib.sha256(name.encode()).digest() * (50 + i * 40) for i, name in enumerate(dl.OPENAI_FILES)}
    # the text files hold what they claim to (download checks that they parse)
    content["checkpoint"] = b'model_checkpoint_path: "model.ckpt"\n' + b" " * 500
    content["encoder.json"] = json.dumps({f"tok{i}": i for i in range(300)}).encode()
    content["hparams.json"] = json.dumps({"n_vocab": 50257, "n_ctx": 1024, "n_embd": 768}).encode()
    content["vocab.bpe"] = b"#version: 0.2\n" + b"a b\n" * 400
    monkeypatch.setattr(
        dl,
        "EXPECTED_BYTES",
        {("124M", "model.ckpt.data-00000-of-00001"): len(content["model.ckpt.data-00000-of-00001"])},
    )
    monkeypatch.setattr(dl, "EXPECTED_SHA256", {"encoder.json": hashlib.sha256(content["encoder.json"]).hexdigest()})
    monkeypatch.setattr(dl, "CHUNK", 256)
    return content


@pytest.fixture
def server(files):
    s = Server(files)
    yield s
    s.close()


def test_download_writes_every_file_and_a_manifest(tmp_path, server, files, capsys):
    folder = dl.download("124M", tmp_path, base_url=server.url)
    assert folder == tmp_path / "124M"
    for name, body in files.items():
        assert (folder / name).read_bytes() == body
    manifest = (folder / "SHA256SUMS").read_text().splitlines()
    assert len(manifest) == len(files)
    assert f"{hashlib.sha256(files['checkpoint']).hexdigest()}  checkpoint" in manifest
    assert "%" in capsys.readouterr().err  # a progress bar was drawn
    assert not list(folder.glob("*.part"))


def test_dropped_connection_resumes_with_range(tmp_path, server, files):
    data = "model.ckpt.data-00000-of-00001"
    server.drop_after[data] = 1000
    dl.download("124M", tmp_path, base_url=server.url, retries=2)
    assert (tmp_path / "124M" / data).read_bytes() == files[data]
    assert server.ranges == [f"{data} bytes=1000-"]  # continued where it stopped, not from 0


def test_interrupted_run_resumes_on_the_next_run(tmp_path, server, files):
    data = "model.ckpt.data-00000-of-00001"
    server.drop_after[data] = 700
    with pytest.raises(NpgptError, match="run the same command again to resume"):
        dl.download("124M", tmp_path, base_url=server.url, retries=0)
    part = tmp_path / "124M" / (data + ".part")
    assert part.stat().st_size == 700 and not (tmp_path / "124M" / data).exists()  # nothing half-written in place
    dl.download("124M", tmp_path, base_url=server.url)
    assert (tmp_path / "124M" / data).read_bytes() == files[data]
    assert f"{data} bytes=700-" in server.ranges


def test_wrong_size_is_refused(tmp_path, server, files, monkeypatch):
    data = "model.ckpt.data-00000-of-00001"
    monkeypatch.setattr(dl, "EXPECTED_BYTES", {("124M", data): len(files[data]) + 5})
    with pytest.raises(NpgptError, match="expected"):
        dl.download("124M", tmp_path, base_url=server.url)
    assert not (tmp_path / "124M" / data).exists()


def test_truncated_body_with_honest_length_is_retried_then_refused(tmp_path, server, files):
    server.lie_length["hparams.json"] = len(files["hparams.json"]) + 100  # announces more than it sends
    with pytest.raises(NpgptError, match=r"hparams\.json"):
        dl.download("124M", tmp_path, base_url=server.url, retries=1)
    assert not (tmp_path / "124M" / "hparams.json").exists()


def test_corrupted_file_with_a_known_hash_is_removed(tmp_path, server, files):
    server.files["encoder.json"] = b"x" + files["encoder.json"][1:]  # same size, one byte changed
    with pytest.raises(NpgptError, match="wrong sha256"):
        dl.download("124M", tmp_path, base_url=server.url)
    assert not (tmp_path / "124M" / "encoder.json").exists()


def test_rerun_verifies_and_refetches_a_file_corrupted_on_disk(tmp_path, server, files, capsys):
    folder = dl.download("124M", tmp_path, base_url=server.url)
    index = folder / "model.ckpt.index"
    index.write_bytes(b"\x00" + index.read_bytes()[1:])
    capsys.readouterr()
    dl.download("124M", tmp_path, base_url=server.url)
    err = capsys.readouterr().err
    assert "model.ckpt.index" in err and "does not match SHA256SUMS" in err
    assert "checkpoint                       verified" in err
    assert index.read_bytes() == files["model.ckpt.index"]


def test_offline_is_a_clear_error(tmp_path):
    with pytest.raises(NpgptError, match="cannot reach"):
        dl.download("124M", tmp_path, base_url="http://127.0.0.1:9/gpt-2/models")


def test_hf_source_and_bad_size(tmp_path):
    with pytest.raises(NpgptError, match="not one of"):
        dl.download("7B", tmp_path)
    header = json.dumps({"__metadata__": {}}).encode()
    safetensors = len(header).to_bytes(8, "little") + header + b"0" * 3000  # a header that parses
    srv = Server({"config.json": b'{"n_head": 12}', "model.safetensors": safetensors})
    try:
        folder = dl.download("124M", tmp_path, source="hf", base_url=srv.url.rsplit("/gpt-2", 1)[0])
    finally:
        srv.close()
    assert folder == Path(tmp_path) / "hf-124M" and (folder / "model.safetensors").read_bytes() == safetensors


def test_files_copied_in_by_hand_are_verified_and_kept_offline(tmp_path, files, capsys):
    """The trial: files copied in as the offline message says were deleted with the server down."""
    folder = tmp_path / "124M"
    folder.mkdir()
    for name, body in files.items():
        (folder / name).write_bytes(body)
    assert dl.download("124M", tmp_path, base_url="http://127.0.0.1:9/gpt-2/models") == folder
    assert all((folder / n).read_bytes() == b for n, b in files.items())
    assert capsys.readouterr().err.count("verified") == len(files)
    assert dl._read_manifest(folder).keys() == files.keys()


def test_a_failing_file_stays_until_its_replacement_arrives(tmp_path, server, files):
    """The trial: a weights file of the wrong size was deleted, then the server answered 404."""
    data = "model.ckpt.data-00000-of-00001"
    folder = tmp_path / "124M"
    folder.mkdir()
    (folder / data).write_bytes(b"mine" * 1000)
    body = server.files.pop(data)
    with pytest.raises(NpgptError, match="HTTP 404"):
        dl.download("124M", tmp_path, base_url=server.url)
    assert (folder / data).read_bytes() == b"mine" * 1000
    server.files[data] = body
    dl.download("124M", tmp_path, base_url=server.url)
    assert (folder / data).read_bytes() == body
    assert (folder / (data + ".bad")).read_bytes() == b"mine" * 1000  # moved aside, never deleted


def test_a_file_of_unknown_size_cut_short_is_never_recorded_as_verified(tmp_path, server, files):
    server.no_length.add("hparams.json")
    server.drop_after["hparams.json"] = 10  # the connection closes early, without an error
    with pytest.raises(NpgptError, match=r"no size and none is published.* kept as hparams\.json\.part"):
        dl.download("124M", tmp_path, base_url=server.url)
    folder = tmp_path / "124M"
    assert (
        not (folder / "hparams.json").exists()
        and (folder / "hparams.json.part").read_bytes() == files["hparams.json"][:10]
    )
    assert "hparams.json" not in dl._read_manifest(folder)


def test_an_html_page_served_as_a_file_is_moved_aside_not_verified(tmp_path, server, files):
    server.files["checkpoint"] = b"<!DOCTYPE html><html><body>Sign in</body></html>"
    with pytest.raises(NpgptError, match=r"checkpoint .* is an HTML page"):
        dl.download("124M", tmp_path, base_url=server.url)
    folder = tmp_path / "124M"
    assert (folder / "checkpoint.bad").is_file() and not (folder / "checkpoint").exists()
    assert "checkpoint" not in dl._read_manifest(folder)


def test_an_html_file_an_older_run_recorded_is_fetched_again(tmp_path, server, files):
    folder = tmp_path / "124M"
    folder.mkdir()
    (folder / "checkpoint").write_bytes(b"<html>error</html>")
    dl._write_manifest(folder, {"checkpoint": dl.sha256_file(folder / "checkpoint")})
    dl.download("124M", tmp_path, base_url=server.url)
    assert (folder / "checkpoint").read_bytes() == files["checkpoint"] and (folder / "checkpoint.bad").is_file()


def test_busy_servers_are_retried_with_backoff(tmp_path, server, files, monkeypatch):
    monkeypatch.setattr(dl, "BACKOFF", 0.0)
    server.statuses["model.ckpt.meta"] = [503, 503]
    dl.download("124M", tmp_path, base_url=server.url)
    assert (tmp_path / "124M" / "model.ckpt.meta").read_bytes() == files["model.ckpt.meta"]
    server.statuses["model.ckpt.meta"] = [503] * 10
    (tmp_path / "124M" / "model.ckpt.meta").unlink()
    with pytest.raises(NpgptError, match="HTTP 503"):
        dl.download("124M", tmp_path, base_url=server.url)


def test_two_downloads_into_one_folder_the_second_is_refused(tmp_path, server, files):
    from npgpt.files import run_lock

    (tmp_path / "124M").mkdir()
    part = tmp_path / "124M" / "model.ckpt.meta.part"
    part.write_bytes(b"the first download's bytes")
    with run_lock(tmp_path / "124M", who="download"), pytest.raises(NpgptError, match="in use by another npgpt"):
        dl.download("124M", tmp_path, base_url=server.url)
    assert part.read_bytes() == b"the first download's bytes"
