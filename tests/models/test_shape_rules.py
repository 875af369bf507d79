"""Every model-shape rule of the families, each broken by one recipe: `glotta run` stops before
any stage with exit status 2 and one line naming the keys (found missing by mutation testing:
deleting any one rule left the suite green). One mistake is one line: a negative
model.rope_theta used to be reported twice, by the recipe check and by the Llama family."""

from __future__ import annotations

import pytest

from tests.conftest import TINY_OVERRIDES
from tests.test_cli_errors import assert_one_clear_line, run_cli

CUSTOM = ['model.preset="custom"', "model.n_layer=2", "model.n_embd=32", "model.n_head=4"]
LLAMA = ['model.arch="llama"', *CUSTOM]


@pytest.mark.parametrize(
    "sets, fragments",
    [
        (['model.arch="gpt5"'], ["model.arch = 'gpt5' is not a known model family"]),
        (['model.preset="huge"'], ["model.preset = 'huge' is not a size of model.arch = 'gpt2'"]),
        (['model.preset="custom"'], ["model.preset = 'custom' needs model.n_layer, n_embd and n_head"]),
        ([*CUSTOM, "model.n_embd=30"], ["model.n_embd (30) must be divisible by model.n_head (4)"]),
        ([*CUSTOM, "model.n_positions=32"],
         ["model.n_positions (32) is smaller than train.block_size (64)"]),
        ([*LLAMA, "model.n_kv_head=3"], ["model.n_head (4) must be a multiple of model.n_kv_head (3)"]),
        ([*LLAMA, "model.n_embd=12", "model.n_head=4"], ["model.n_embd / model.n_head = 3 must be even"]),
        ([*LLAMA, "model.rope_theta=-1.0"], ["model.rope_theta = -1.0: must be 0 or more"]),
        (['train.objective="mlm"', 'tokenizer.kind="wordpiece"'], ["train.objective = 'mlm' does not train model.arch = 'gpt2'"]),
    ],
)  # fmt: skip
def test_a_broken_shape_rule_is_one_line_before_any_stage(sets, fragments, tmp_path, capsys):
    args = [a for s in [*TINY_OVERRIDES, *sets] for a in ("--set", s)]
    code, _, err = run_cli(capsys, "run", "demo", "--run-dir", str(tmp_path / "run"), *args)
    assert_one_clear_line(code, err, *fragments)
    assert not (tmp_path / "run" / "corpus").exists()
