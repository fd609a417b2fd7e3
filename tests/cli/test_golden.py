"""``npgpt golden write`` / ``verify``: a bundle read by another implementation (torchgpt, through
the bundle only; a C program for LayerNorm) and its outputs verified, with a negative control."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("safetensors")
from safetensors.numpy import load_file, save_file

from parity.cli import main

EXAMPLE_C = Path(__file__).resolve().parents[2] / "examples" / "c_layernorm" / "layernorm.c"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("golden") / "bundle"
    assert main(["golden", "write", str(out), "--steps", "2", "--vocab-size", "512"]) == 0
    return out


def torch_outputs(bundle: Path, dtype: type = np.float64) -> dict[str, np.ndarray]:
    """What a user's implementation does: read the inputs and weights, write every output (its
    own tensors in ``dtype``)."""
    pytest.importorskip("torch")
    from npgpt.config import GPTConfig
    from npgpt.layers.softmax import softmax
    from parity.adapters import TorchImpl
    from parity.engine import Schedule

    manifest = json.loads((bundle / "manifest.json").read_text())
    cfg = GPTConfig.from_dict(manifest["config"])
    inputs = load_file(str(bundle / "inputs.safetensors"))
    weights = {k.removeprefix("weight "): v for k, v in load_file(str(bundle / "weights.safetensors")).items()}
    impl = TorchImpl()
    impl.load(cfg, weights, np.dtype(dtype))
    logits, blocks = impl.forward(inputs["input ids"])
    out = {"logits": logits}
    for i, block in enumerate(blocks):
        out[f"trf_blocks.{i} output"] = block
        out.update({f"trf_blocks.{i}.{k} output": v for k, v in impl.taps()[i].items()})
    loss, grads = impl.loss_and_grads(inputs["input ids"], inputs["input targets"], None)
    out.update({"loss": np.array(loss), **{f"grad {k}": np.array(g) for k, g in grads.items()}})
    tokens, steps = impl.generate_greedy(inputs["generate prompt"], manifest["generation"]["tokens"])
    out.update({f"generate step {j + 1} logits (KV cache)": step for j, step in enumerate(steps)})
    out["generate tokens (KV cache)"] = tokens  # int64, as a C program would write them
    for f in manifest["generation"]["filters"]:
        kept = impl.filter_logits(inputs["filter logits"], f["temperature"], f["top_k"], f["top_p"])
        label = f"filter temperature {f['temperature']}, top-k {f['top_k']}, top-p {f['top_p']}"
        out[f"{label}: kept tokens"] = np.isfinite(kept).astype(np.uint8)
        out[f"{label}: probabilities"] = softmax(kept)
    out.update(torch_windows(inputs["data token ids"], manifest["data"]["windows"]))
    opt, sched = manifest["optimizer"], manifest["schedule"]
    impl.init_optimizer(opt["lr"], opt["weight_decay"], tuple(opt["betas"]), opt["eps"])
    fields = ("peak_lr", "warmup_steps", "initial_lr", "min_lr", "max_norm")
    impl.set_schedule(Schedule(**{k: sched[k] for k in fields}), sched["total_steps"])
    for s in range(1, manifest["steps"] + 1):
        prefix = f"step {s} mask "
        masks = {k.removeprefix(prefix): v.astype(bool) for k, v in inputs.items() if k.startswith(prefix)}
        loss = impl.loss_and_grads(inputs[f"step {s} ids"], inputs[f"step {s} targets"], masks)[0]
        lr, norm = impl.optimizer_step()
        out[f"step {s} loss"], out[f"step {s} lr"], out[f"step {s} grad norm"] = map(np.array, (loss, lr, norm))
        for what, state in zip(("param", "adam m", "adam v"), impl.state(), strict=True):
            out.update({f"{what} {k} @ step {s}": np.array(v) for k, v in state.items()})
    return out


def torch_windows(token_ids: np.ndarray, windows: list[dict]) -> dict[str, np.ndarray]:
    """torchgpt's own GPTDatasetV1 and torch's DataLoader over the bundle's token ids."""
    from torch.utils.data import DataLoader

    from torchgpt.data import GPTDatasetV1

    class Given:  # the bundle's ids stand in for the tokenizer
        def encode(self, text, allowed_special=()):
            return token_ids.tolist()

    out = {}
    for w in windows:
        dataset = GPTDatasetV1("", Given(), w["max_length"], w["stride"])
        batches = list(DataLoader(dataset, batch_size=w["batch_size"], shuffle=False, drop_last=w["drop_last"]))
        label = f"data T={w['max_length']} stride {w['stride']} batch {w['batch_size']}"
        label += " drop_last" if w["drop_last"] else ""
        out[f"{label}: inputs"] = np.concatenate([x.numpy() for x, _ in batches])
        out[f"{label}: targets"] = np.concatenate([y.numpy() for _, y in batches])
        out[f"{label}: batch sizes"] = np.array([len(x) for x, _ in batches])
    return out


def test_torchgpt_reading_the_bundle_verifies_every_output(bundle, tmp_path, capsys):
    results = tmp_path / "results.safetensors"
    # contiguous: safetensors.numpy.save_file (0.8.0) writes a strided view's underlying memory
    save_file({k: np.ascontiguousarray(v) for k, v in torch_outputs(bundle).items()}, str(results))
    assert main(["golden", "verify", str(bundle), str(results), "--quiet"]) == 0
    text = capsys.readouterr().out
    manifest = json.loads((bundle / "manifest.json").read_text())
    n_out = sum(meta["role"] == "output" for meta in manifest["tensors"].values())
    assert "float64: PASS" in text and "were not in" in text  # all but the LayerNorm component's 4
    assert f"4 of the bundle's {n_out} outputs" in text


def test_float32_results_verify_at_float32_tolerances_and_a_float32_mistake_still_fails(bundle, tmp_path, capsys):
    outputs = torch_outputs(bundle, np.float32)
    assert outputs["logits"].dtype == np.float32 and outputs["grad tok_emb.weight"].dtype == np.float32
    good, bad = tmp_path / "f32.safetensors", tmp_path / "f32-bad.safetensors"
    save_file({k: np.ascontiguousarray(v) for k, v in outputs.items()}, str(good))
    assert main(["golden", "verify", str(bundle), str(good), "--quiet"]) == 0, capsys.readouterr().out
    assert "float32" in capsys.readouterr().out
    outputs["param trf_blocks.1.ff.layers.0.weight @ step 2"] *= np.float32(1.001)  # float32 sees 1e-3
    save_file({k: np.ascontiguousarray(v) for k, v in outputs.items()}, str(bad))
    assert main(["golden", "verify", str(bundle), str(bad), "--quiet"]) == 1
    assert "param trf_blocks.1.ff.layers.0.weight @ step 2" in capsys.readouterr().out


def test_a_perturbed_output_fails_and_is_named(bundle, tmp_path, capsys):
    outputs = load_file(str(bundle / "backward.safetensors"))
    name = "grad trf_blocks.1.ff.layers.0.weight"
    outputs[name] = outputs[name] + 1e-7 * np.abs(outputs[name]).max()
    results = tmp_path / "bad.npz"
    np.savez(results, **outputs)
    assert main(["golden", "verify", str(bundle), str(results), "--quiet"]) == 1
    assert f"first diverging tensor: {name}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("file", "name", "bug"),
    [
        (
            "generation.safetensors",
            "generate tokens (KV cache)",
            lambda t: t + (np.arange(t.size) == t.size - 1).reshape(t.shape),
        ),
        ("data.safetensors", "data T=4 stride 1 batch 8: targets", lambda t: np.roll(t, 1, axis=1)),
        ("step-1.safetensors", "step 1 grad norm", lambda t: t * (1 + 1e-8)),
    ],
)
def test_wrong_tokens_windows_or_norms_fail_and_are_named(bundle, tmp_path, capsys, file, name, bug):
    outputs = load_file(str(bundle / file))
    outputs[name] = np.ascontiguousarray(bug(outputs[name]))
    results = tmp_path / "bad.safetensors"
    save_file(outputs, str(results))
    assert main(["golden", "verify", str(bundle), str(results), "--quiet"]) == 1
    assert f"first diverging tensor: {name}" in capsys.readouterr().out


def test_the_c_example_writes_layer_norm_outputs_that_verify(bundle, tmp_path, capsys):
    cc = shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler")
    exe = tmp_path / "layernorm"
    subprocess.run([cc, "-O2", "-Wall", "-Werror", "-o", str(exe), str(EXAMPLE_C), "-lm"], check=True)
    results = tmp_path / "c.safetensors"
    subprocess.run([str(exe), str(bundle / "components.safetensors"), str(results)], check=True)
    report = tmp_path / "verify.json"
    assert main(["golden", "verify", str(bundle), str(results), "--json", str(report)]) == 0
    text = capsys.readouterr().out
    assert "layer_norm dx" in text and "float64: PASS, all 4 within tolerance" in text
    saved = json.loads(report.read_text())  # npgpt check's schema
    assert saved["reports"][0]["ok"] and saved["reports"][0]["rows"][0]["name"] == "layer_norm out"


def test_bad_input_is_one_line_and_exit_2(bundle, tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine.txt").write_text("keep me")
    unrelated = tmp_path / "other.npz"
    np.savez(unrelated, something=np.zeros(3))
    for args in (
        ["golden", "write", str(tmp_path / "full")],  # never writes into a directory with files
        ["golden", "verify", str(tmp_path), str(unrelated)],  # not a bundle
        ["golden", "verify", str(bundle), str(unrelated)],  # none of the bundle's names
        ["golden", "verify", str(bundle), str(tmp_path / "missing.safetensors")],
    ):
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("npgpt golden: error:"), err
    assert (tmp_path / "full" / "mine.txt").read_text() == "keep me"
    # a write killed before its manifest: not verifiable, and the rewrite says why it refuses
    stopped = tmp_path / "stopped"
    stopped.mkdir()
    shutil.copy(bundle / "inputs.safetensors", stopped)
    assert main(["golden", "verify", str(stopped), str(unrelated)]) == 2
    assert main(["golden", "write", str(stopped)]) == 2
    assert "write was stopped" in capsys.readouterr().err
