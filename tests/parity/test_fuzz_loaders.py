"""Every weight loader, fed damaged files: truncated, bit-flipped, random or empty bytes. The
only error a user may see is NpgptError (one line, exit 2); the file is never changed. A damaged
file that still parses (a flipped bit inside a float) may load: that is not an error.

Each test runs EXAMPLES cases per format, derandomized, whatever the Hypothesis profile.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from npgpt import GPTConfig, NpgptError
from npgpt.checkpoint import load_checkpoint as load_npz
from npgpt.checkpoint import save_checkpoint
from parity.engine import random_params
from parity.weights import load_weights, save_weights

EXAMPLES = 60
CFG = GPTConfig(vocab_size=29, context_length=8, emb_dim=8, n_heads=2, n_layers=1, drop_rate=0.0, qkv_bias=True)
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip


@st.composite
def damage(draw, good: bytes) -> bytes:
    kind = draw(st.sampled_from(["truncate", "flip", "random", "empty", "flip-header"]))
    if kind == "truncate":
        return good[: draw(st.integers(0, len(good) - 1))]
    if kind in ("flip", "flip-header"):
        hi = min(len(good), 256) if kind == "flip-header" else len(good)
        pos, bit = draw(st.integers(0, hi - 1)), draw(st.integers(0, 7))
        return good[:pos] + bytes([good[pos] ^ (1 << bit)]) + good[pos + 1 :]
    if kind == "random":
        return draw(st.binary(min_size=1, max_size=2048))
    return b""


def _params():
    return {k: v.astype(np.float32) for k, v in random_params(CFG, 0).items()}


def _exercise(path: Path, data: bytes, *loaders) -> None:
    path.write_bytes(data)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    for load in loaders:
        try:
            load(path)
        except NpgptError as exc:
            assert "\n" not in str(exc), str(exc)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before  # input untouched


def _good(name: str, write) -> bytes:
    with tempfile.TemporaryDirectory() as d:
        write(Path(d) / name)
        return (Path(d) / name).read_bytes()


GOOD_NPZ = _good("w.npz", lambda p: save_checkpoint(p, CFG, _params(), {"m": _params(), "v": _params(), "lr": 1e-3}))


@FUZZ
@given(data=st.data())
def test_npz_checkpoints(tmp_path, data):
    _exercise(tmp_path / "w.npz", data.draw(damage(GOOD_NPZ)), load_npz, load_weights)


def test_safetensors(tmp_path):
    pytest.importorskip("safetensors")
    good = _good("w.safetensors", lambda p: save_weights(p, CFG, _params()))

    @FUZZ
    @given(data=st.data())
    def run(data):
        _exercise(tmp_path / "w.safetensors", data.draw(damage(good)), load_weights)

    run()


def test_pth_checkpoints_and_bare_state_dicts(tmp_path):
    torch = pytest.importorskip("torch")
    from torchgpt import load_checkpoint as load_pth

    full = _good("w.pth", lambda p: save_weights(p, CFG, _params()))
    bare = _good("b.pth", lambda p: torch.save({k: torch.from_numpy(v) for k, v in _params().items()}, p))

    @FUZZ
    @given(data=st.data(), which=st.sampled_from([full, bare]))
    def run(data, which):
        _exercise(tmp_path / "w.pth", data.draw(damage(which)), load_pth, load_weights)

    run()


@pytest.mark.parametrize("name", ["hparams.json", "checkpoint", "model.ckpt.index", "model.ckpt.data-00000-of-00001"])
def test_openai_checkpoint_files(tmp_path, name):
    pytest.importorskip("tensorflow")
    model_dir = save_weights(tmp_path / "oa", CFG, _params())
    good = (model_dir / name).read_bytes()

    @settings(FUZZ, max_examples=EXAMPLES // 3)
    @given(data=st.data())
    def run(data):
        _exercise(model_dir / name, data.draw(damage(good)), load_weights)

    run()


def test_the_trials_named_inputs_are_one_line_errors(tmp_path):
    """Inputs the trial found ending in tracebacks: npz metadata that is not JSON, hparams.json
    without n_head or not JSON, a safetensors c_attn.weight of the wrong shape."""
    (tmp_path / "w.npz").write_bytes(GOOD_NPZ)
    with np.load(tmp_path / "w.npz") as archive:
        arrays = {name: archive[name] for name in archive.files}
    arrays["meta"] = np.frombuffer(b"{not json", dtype=np.uint8)
    np.savez(tmp_path / "garbage.npz", **arrays)
    with pytest.raises(NpgptError, match="damaged meta record"):
        load_npz(tmp_path / "garbage.npz")
    st = pytest.importorskip("safetensors.numpy")
    good = tmp_path / "w.safetensors"
    save_weights(good, CFG, _params())
    tensors = st.load_file(str(good))
    name = next(k for k in tensors if k.endswith("attn.c_attn.weight"))
    tensors[name] = np.ascontiguousarray(tensors[name][:, :-1])
    st.save_file(tensors, str(tmp_path / "bad.safetensors"))
    with pytest.raises(NpgptError):
        load_weights(tmp_path / "bad.safetensors")


@pytest.mark.parametrize("hparams", ['{"n_vocab": 29}', "not json"])
def test_openai_hparams_without_n_head_or_not_json(tmp_path, hparams):
    pytest.importorskip("tensorflow")
    model_dir = save_weights(tmp_path / "oa", CFG, _params())
    (model_dir / "hparams.json").write_text(hparams)
    with pytest.raises(NpgptError, match="is not valid openai weights"):
        load_weights(model_dir)
