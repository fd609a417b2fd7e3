"""Download OpenAI's GPT-2 weights (the book's URLs) or Hugging Face's safetensors.

Each file streams to ``<name>.part`` with a progress bar, resumes with an HTTP Range request
after a dropped connection (also on the next run), is checked against its expected size (and
sha256 where the hash is published), fsynced, and renamed into place: a file under its final
name is always complete. The sha256 of every file is recorded in ``SHA256SUMS`` beside them.

A file already in the folder (a finished earlier run, or copied in by hand) is verified against
what is known of it (published size and sha256, else the manifest) and kept when it passes; one
that fails stays in place until its replacement has fully arrived and verified, and is then
moved aside to ``<name>.bad``. Nothing is ever deleted but our own unfinished ``.part`` files.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from npgpt.errors import NpgptError
from npgpt.files import run_lock
from npgpt.tokenizer import ENCODER_JSON_SHA256, VOCAB_BPE_SHA256

OPENAI_BASE = "https://openaipublic.blob.core.windows.net/gpt-2/models"
OPENAI_FILES = (
    "checkpoint",
    "encoder.json",
    "hparams.json",
    "model.ckpt.data-00000-of-00001",
    "model.ckpt.index",
    "model.ckpt.meta",
    "vocab.bpe",
)
HF_BASE = "https://huggingface.co"
# The downloadable sizes, declared once: OpenAI's folder name -> the Hugging Face repository.
HF_REPOS = {"124M": "openai-community/gpt2", "355M": "openai-community/gpt2-medium",
            "774M": "openai-community/gpt2-large", "1558M": "openai-community/gpt2-xl"}  # fmt: skip
SIZES = tuple(HF_REPOS)
SOURCES = ("openai", "hf")
HF_FILES = ("config.json", "model.safetensors")
# Sizes and hashes known in advance; other files are checked against the server's Content-Length.
EXPECTED_BYTES = {
    ("124M", "model.ckpt.data-00000-of-00001"): 497_759_232,
    ("*", "encoder.json"): 1_042_301,
    ("*", "vocab.bpe"): 456_318,
}
EXPECTED_SHA256 = {"encoder.json": ENCODER_JSON_SHA256, "vocab.bpe": VOCAB_BPE_SHA256}
MANIFEST = "SHA256SUMS"
BACKOFF = 0.5  # seconds, times 2**attempt (at most 10x): between retries of a failed or cut request
CHUNK = 1 << 20


RETRY_STATUS = (429, 500, 502, 503, 504)  # the server is busy or failing for now: try again, with backoff


def content_problem(name: str, path: Path) -> str | None:
    """Why the bytes at ``path`` are not what ``name`` claims to be, or None: an HTML page (a login
    or error page served with 200), JSON that does not parse, a TF checkpoint pointer or BPE merges
    file without its header, a safetensors file whose header does not parse."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
        if name.endswith(".safetensors") and len(head) >= 8:
            n = int.from_bytes(head[:8], "little")  # the header's length, then the JSON header
            if len(head) < 8 + n < (1 << 27):
                head += f.read(8 + n - len(head))
    if head.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html")):
        return "is an HTML page, not the file (an error or login page served in its place)"
    try:
        if name.endswith(".json"):
            json.loads(path.read_bytes())
        elif name == "checkpoint" and b"model_checkpoint_path" not in head:
            return "is not a TensorFlow checkpoint pointer (no model_checkpoint_path)"
        elif name == "vocab.bpe" and not head.startswith(b"#version"):
            return "is not GPT-2's merges file (no #version header)"
        elif name.endswith(".safetensors"):
            json.loads(head[8 : 8 + int.from_bytes(head[:8], "little")])
    except (ValueError, UnicodeDecodeError):
        return f"does not parse as {'JSON' if name.endswith('.json') else 'a safetensors header'}"
    return None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _read_manifest(folder: Path) -> dict[str, str]:
    path = folder / MANIFEST
    if not path.is_file():
        return {}
    pairs = (line.split("  ", 1) for line in path.read_text().splitlines() if "  " in line)
    return {name: digest for digest, name in pairs}


def _write_manifest(folder: Path, sums: dict[str, str]) -> None:
    text = "".join(f"{sums[name]}  {name}\n" for name in sorted(sums))
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, folder / MANIFEST)


class _Progress:
    def __init__(self, name: str, total: int | None, start: int) -> None:
        self.name, self.total, self.done, self.stream = name, total, start, sys.stderr
        self.t0, self.last, self.start = time.perf_counter(), 0.0, start

    def update(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self.last >= 0.2 or (self.total is not None and self.done >= self.total):
            self.last = now
            rate = (self.done - self.start) / max(now - self.t0, 1e-9) / 1e6
            if self.total:
                frac = self.done / self.total
                bar = "#" * int(30 * frac)
                msg = (
                    f"\r{self.name:<32} [{bar:<30}] {100 * frac:5.1f}% {self.done / 1e6:8.1f}/{self.total / 1e6:.1f} MB"
                )
            else:
                msg = f"\r{self.name:<32} {self.done / 1e6:8.1f} MB"
            self.stream.write(f"{msg} {rate:6.1f} MB/s")
            self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


def fetch(url: str, dest: Path, expected_bytes: int | None = None, retries: int = 3, timeout: float = 30.0) -> None:
    """Download ``url`` to ``dest`` via ``dest.part``, resuming with Range; atomic rename at the end."""
    part = dest.with_name(dest.name + ".part")
    attempt = 0
    while True:
        offset = part.stat().st_size if part.exists() else 0
        request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                if offset and response.status != 206:  # the server ignored Range: start over
                    offset = 0
                length = response.headers.get("Content-Length")
                total = offset + int(length) if length is not None else None
                if expected_bytes is not None and total is not None and total != expected_bytes:
                    raise NpgptError(
                        f"{url} is {total:,} bytes, expected {expected_bytes:,}; the server's file is not the "
                        "published one (nothing was kept)"
                    )
                progress = _Progress(dest.name, expected_bytes or total, offset)
                with open(part, "ab" if offset else "wb") as f:
                    try:
                        while chunk := response.read(CHUNK):
                            f.write(chunk)
                            progress.update(len(chunk))
                    finally:
                        f.flush()
                        os.fsync(f.fileno())
                        progress.close()
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and offset:  # Range past the end: the part file is stale
                part.unlink()
                continue
            if exc.code in RETRY_STATUS and attempt < retries:
                attempt += 1
                time.sleep(min(2.0**attempt, 10.0) * BACKOFF)
                continue
            raise NpgptError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, http.client.HTTPException, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            done = part.stat().st_size if part.exists() else 0
            if isinstance(exc, urllib.error.URLError) and done == 0 and attempt == 0:
                raise NpgptError(
                    f"cannot reach {url} ({reason}); check the network, or copy the files into {dest.parent}"
                ) from None
            attempt += 1
            if attempt > retries:
                raise NpgptError(
                    f"download of {dest.name} interrupted at {done:,} bytes ({reason}); "
                    "run the same command again to resume"
                ) from None
            time.sleep(min(2.0**attempt, 10.0) * BACKOFF)
            continue
        got = part.stat().st_size
        want = expected_bytes if expected_bytes is not None else total
        if want is not None and got < want:  # the connection closed early without an error
            attempt += 1
            if attempt > retries:
                raise NpgptError(
                    f"download of {dest.name} stopped at {got:,} of {want:,} bytes; "
                    "run the same command again to resume"
                )
            continue
        if want is not None and got != want:
            part.unlink()
            raise NpgptError(f"{dest.name} is {got:,} bytes, expected {want:,}; removed it, run the command again")
        if want is None:  # no Content-Length and none published: a connection closed early looks the same
            raise NpgptError(
                f"{dest.name}: the server sent no size and none is published, so the {got:,} bytes received cannot "
                f"be verified; kept as {part.name}. Run the command again, or copy the file in by hand"
            )
        os.replace(part, dest)
        return


def download(
    model_size: str,
    models_dir: str | Path = "models",
    source: str = "openai",
    base_url: str | None = None,
    retries: int = 3,
) -> Path:
    """Download (or verify) one GPT-2 size into ``models_dir/<size>`` (openai) or
    ``models_dir/hf-<size>`` (hf). Returns that directory, loadable by parity.load_weights."""
    if model_size not in SIZES:
        raise NpgptError(f"model size {model_size!r} is not one of {SIZES}")
    if source == "openai":
        folder = Path(models_dir) / model_size
        files = {name: f"{base_url or OPENAI_BASE}/{model_size}/{name}" for name in OPENAI_FILES}
    elif source == "hf":
        folder = Path(models_dir) / f"hf-{model_size}"
        files = {name: f"{base_url or HF_BASE}/{HF_REPOS[model_size]}/resolve/main/{name}" for name in HF_FILES}
    else:
        raise NpgptError(f"unknown source {source!r}; use openai or hf")
    with run_lock(folder, who="download"):  # two downloads into one folder: the second is refused
        return _download_into(folder, files, model_size, retries)


def _download_into(folder: Path, files: dict[str, str], model_size: str, retries: int) -> Path:
    sums = _read_manifest(folder)
    for name, url in files.items():
        dest = folder / name
        expected = EXPECTED_BYTES.get((model_size, name), EXPECTED_BYTES.get(("*", name)))
        if dest.exists():
            problem = _problem(dest, expected, EXPECTED_SHA256.get(name) or sums.get(name))
            if problem is None:
                print(f"{name:<32} verified", file=sys.stderr)
                sums[name] = sums.get(name) or sha256_file(dest)
                _write_manifest(folder, sums)
                continue
            print(f"{name:<32} {problem}: fetching a replacement (kept until it arrives)", file=sys.stderr)
        new = dest.with_name(dest.name + ".new") if dest.exists() else dest
        fetch(url, new, expected, retries)
        digest = sha256_file(new)
        if name in EXPECTED_SHA256 and digest != EXPECTED_SHA256[name]:
            bad = _move_aside(new, dest)
            raise NpgptError(
                f"{name} from {url} has the wrong sha256 (corrupted); kept it as {bad.name}, run the command again"
            )
        problem = content_problem(name, new)
        if problem is not None:  # only verified bytes reach the manifest
            bad = _move_aside(new, dest)
            raise NpgptError(f"{name} from {url} {problem}; kept it as {bad.name}, nothing recorded as verified")
        if new != dest:
            print(f"{name:<32} replaced; the old file is {_move_aside(dest).name}", file=sys.stderr)
            os.replace(new, dest)
        sums[name] = digest
        _write_manifest(folder, sums)
    return folder


def _problem(path: Path, size: int | None, sha256: str | None) -> str | None:
    """Why ``path`` fails what is known of it (size, then sha256), or None when it passes or
    nothing is known (a hand-copied file is trusted; its hash goes into the manifest)."""
    got = path.stat().st_size
    if size is not None and got != size:
        return f"is {got:,} bytes, expected {size:,}"
    if sha256 is not None and sha256_file(path) != sha256:
        return f"does not match {MANIFEST}"
    return content_problem(path.name, path)  # a manifest written from a bad file by an older npgpt


def _move_aside(path: Path, named: Path | None = None) -> Path:
    """Rename ``path`` to ``<name>.bad`` (``.bad.1``, ... if taken; ``name`` of ``named``, the file
    it stands for, when given); never delete it."""
    base = (named or path).name
    target, n = path.with_name(base + ".bad"), 0
    while target.exists():
        n += 1
        target = path.with_name(f"{base}.bad.{n}")
    os.replace(path, target)
    return target
