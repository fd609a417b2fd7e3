"""The adapter protocol with a third implementation: docs/adapters.md's worked example."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from npgpt import GPTConfig
from parity.adapters import NumpyImpl, TorchImpl
from parity.engine import random_params, run_check

CFG = GPTConfig.preset("tiny", qkv_bias=True, drop_rate=0.0, context_length=32)


def inputs():
    rng = np.random.default_rng(0)
    return rng.integers(0, CFG.vocab_size, (2, 32)), rng.integers(0, CFG.vocab_size, (2, 32))


def test_sdpa_fast_path_as_a_third_implementation():
    report = run_check(
        CFG, random_params(CFG, 0), *inputs(), "float64", 3, impl=TorchImpl(attention="sdpa"), reference=TorchImpl()
    )
    assert report.ok, report.first_failure
    assert "trf_blocks.1 output" in report.table()


def test_a_wrong_third_implementation_fails():
    class OffByScale(NumpyImpl):
        name = "broken"

        def forward(self, ids):
            logits, blocks = super().forward(ids)
            return logits * (1 + 1e-6), blocks  # a 1e-6 relative error: far above float64's 1e-9

    report = run_check(CFG, random_params(CFG, 0), *inputs(), "float64", 1, impl=OffByScale(), reference=TorchImpl())
    assert not report.ok and report.first_failure.name == "logits"


def test_every_hook_the_engine_looks_up_is_declared_and_the_adapters_match_its_signature():
    import inspect
    import re
    from pathlib import Path

    from parity import adapters, engine
    from parity.hf_model import HFModelImpl
    from parity.torch_module import TorchModuleImpl

    declared = {n for n in dir(adapters.OptionalHooks) if not n.startswith("_")}
    declared |= set(adapters.OptionalHooks.__annotations__)
    required = {n for n in dir(adapters.Implementation) if not n.startswith("_")} | {"name"}
    source = Path(engine.__file__).read_text()
    looked_up = set(re.findall(r'(?:hasattr|getattr)\((?:impl|ref|im), "(\w+)"', source))
    assert looked_up and looked_up <= declared | required, looked_up - declared - required
    for cls in (NumpyImpl, TorchImpl, TorchModuleImpl, HFModelImpl):
        for hook in declared & set(dir(cls)):
            want = getattr(adapters.OptionalHooks, hook, None)
            if callable(want):
                have = list(inspect.signature(getattr(cls, hook)).parameters)
                assert have == list(inspect.signature(want).parameters), (cls.__name__, hook, have)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_torch_module_holds_its_own_copy_of_the_weights_it_loads(dtype):
    """load hands the caller's arrays to load_state_dict as views where the dtype allows (no third
    copy of GPT-2 while it loads); the module must still own its weights: a caller who changes an
    array afterwards changes nothing in the module."""
    params = random_params(CFG, 0)
    impl = TorchImpl()
    impl.load(CFG, params, np.dtype(dtype))
    before = impl.forward(inputs()[0])[0]
    embedding = params["tok_emb.weight"].astype(dtype)  # a copy, in the module's dtype
    for array in params.values():
        array += 1.0
    after = impl.forward(inputs()[0])[0]
    np.testing.assert_array_equal(after, before)
    got = impl.module.tok_emb.weight.detach().numpy()
    np.testing.assert_array_equal(got, embedding)
