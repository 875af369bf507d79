"""train.reuse_host_memory: glibc keeps freed large blocks, so repeated steps stop page-faulting."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from glotta.train.host_memory import keep_freed_host_memory, reuse_host_memory

# A child process (the setting lasts for the life of a process): minor page faults of repeated
# "steps" that each allocate, fill and free 64 MiB and 24 MiB tensors, before and after.
CHILD = textwrap.dedent(
    """
    import json, resource, sys, torch
    from glotta.train.host_memory import keep_freed_host_memory

    def faults(steps):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(steps):
            a = torch.ones(16 * 2**20); b = torch.ones(6 * 2**20); del a, b
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    apply = sys.argv[1] == "reuse"
    applied = keep_freed_host_memory() if apply else False
    faults(12)  # the heap settles into blocks that fit these sizes
    print(json.dumps({"applied": applied, "faults": faults(5)}))
    """
)


def _faults(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True,
                         check=True)  # fmt: skip
    return json.loads(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc only")
def test_freed_blocks_are_reused_instead_of_faulted_in_again():
    default, kept = _faults("default"), _faults("reuse")
    assert kept["applied"] and not default["applied"]
    pages = 5 * (64 + 24) * 2**20 // 4096  # what five steps touch, in 4 KiB pages
    assert default["faults"] > pages // 2  # the C library's default maps them afresh
    assert kept["faults"] < pages // 20, kept


def test_only_a_cpu_training_process_is_switched():
    assert not reuse_host_memory(False, torch.device("cpu"))
    assert not reuse_host_memory(True, torch.device("meta"))
    assert reuse_host_memory(True, torch.device("cpu")) == keep_freed_host_memory()


def test_the_training_plan_line_says_whether_host_memory_is_reused(tiny_run, tmp_path, capsys):
    """The loop applies the setting and its plan line reports what was applied (off: silent)."""
    from glotta.train.loop import run_train
    from tests.conftest import tiny_recipe
    from tests.train.conftest import fresh_run_with_shards

    _, source = tiny_run
    for enabled in (True, False):
        recipe = tiny_recipe(
            "train.max_steps=1", "train.eval_interval=0", "train.checkpoint_interval=0",
            f"train.reuse_host_memory={'true' if enabled else 'false'}",
        )  # fmt: skip
        run_train(recipe.train, recipe.model, fresh_run_with_shards(tmp_path, str(enabled), source))
        plan = [line for line in capsys.readouterr().out.splitlines() if "global batch" in line]
        assert len(plan) == 1
        expected = enabled and keep_freed_host_memory()
        assert ("host memory reused" in plan[0]) == expected, plan[0]
