"""An input file edited in place is a changed input: `glotta run` redoes the corpus (and refuses
the old checkpoints up front), `glotta train` refuses to resume them. Before, the corpus
fingerprint covered the input paths and settings only, and stale stages were reused silently."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import pytest

from glotta.corpus import run_corpus
from glotta.errors import GlottaError
from glotta.fingerprints import changed_files, file_fingerprint, files_record
from glotta.pipeline import check_before_running, plan_stages
from glotta.rundir import RunDir, read_marker
from glotta.tokenizer.pack import run_pack
from glotta.tokenizer.stage import run_tokenizer
from glotta.train.loop import run_train
from tests.conftest import tiny_recipe


@contextlib.contextmanager
def edited(path: Path, old: bytes, new: bytes):
    """Replace ``old`` by ``new`` (same length) in place; restore bytes and mtime afterwards."""
    data, st = path.read_bytes(), path.stat()
    assert len(old) == len(new) and old in data
    path.write_bytes(data.replace(old, new, 1))
    try:
        yield
    finally:
        path.write_bytes(data)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run built from input files of its own: corpus, tokenizer, shards and 2 trained steps."""
    import rl_wsd_labeled

    base = tmp_path_factory.mktemp("fingerprints")
    data = base / "data"
    shutil.copytree(Path(rl_wsd_labeled.__file__).parent / "verbs" / "RuTenTen", data)
    recipe = tiny_recipe(f'corpus.inputs=["{data}/*.txt"]', "train.max_steps=2")
    run_dir = RunDir(base / "run")
    run_corpus(recipe.corpus, run_dir.corpus)
    run_tokenizer(recipe.tokenizer, run_dir)
    run_pack(recipe.pack, run_dir)
    run_train(recipe.train, recipe.model, run_dir)
    return recipe, run_dir, sorted(data.glob("*.txt"))[0]


def test_the_corpus_marker_and_checkpoint_record_the_input_files(trained):
    recipe, run_dir, first = trained
    recorded = read_marker(run_dir.corpus)["inputs"]
    assert recorded["hash"] == "sampled" and str(first) in recorded["files"]
    assert recorded["files"][str(first)]["size"] == first.stat().st_size
    assert changed_files(recorded) == []


def test_glotta_run_redoes_the_corpus_after_an_in_place_edit(trained):
    recipe, run_dir, first = trained
    plan = {p.name: p for p in plan_stages(recipe, run_dir)}
    assert not plan["corpus"].runs
    with edited(first, "а".encode(), "о".encode()):  # same size, other content
        plan = {p.name: p for p in plan_stages(recipe, run_dir)}
        assert plan["corpus"].runs and "input files changed" in plan["corpus"].reason
        assert plan["tokenizer"].runs and plan["train"].runs
        with pytest.raises(GlottaError, match="corpus stage will run again.*--no-resume"):
            check_before_running(recipe, run_dir, list(plan.values()))


def test_glotta_train_refuses_to_resume_after_an_input_edit(trained):
    recipe, run_dir, first = trained
    with edited(first, "а".encode(), "о".encode()), pytest.raises(GlottaError) as error:
        run_train(recipe.train, recipe.model, run_dir, resume="always")
    message = str(error.value)
    assert f"the corpus input {first} changed since the corpus was built" in message
    assert "--no-resume" in message and "--run-dir" in message


def test_sampled_fingerprints_read_a_bounded_part_and_full_ones_every_byte(tmp_path):
    path = tmp_path / "dump.txt"
    path.write_bytes(b"x" * (8 << 20))
    sampled, full = files_record([path], "sampled"), files_record([path], "full")
    st = path.stat()

    def rewrite(offset: int) -> None:  # one byte changed, size and mtime kept
        with open(path, "r+b") as fh:
            fh.seek(offset)
            fh.write(b"y")
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))

    rewrite(0)  # the first block is always sampled
    assert changed_files(sampled) == [str(path)] and changed_files(full) == [str(path)]
    path.write_bytes(b"x" * (8 << 20))
    rewrite(70_000)  # between two sampled blocks: only the full hash sees it
    assert changed_files(sampled) == [] and changed_files(full) == [str(path)]
    os.utime(path)  # a new modification time is a change for the sampled fingerprint only
    assert changed_files(sampled) == [str(path)]
    path.unlink()
    assert file_fingerprint(path) == {"missing": True}
