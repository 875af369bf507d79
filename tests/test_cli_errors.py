"""No traceback reaches a user for a mistake they can make.

Every command, with a catalogue of bad arguments and bad folders (docs/errors.md lists them with
their messages): exit status 2, one line on stderr that names the thing, no ``Traceback``. The
commands run in this process through ``glotta.cli.main`` (the same code path as the console
script, without a Python start-up per case); a few run as real subprocesses too.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from glotta.cli import main
from tests.conftest import TINY_OVERRIDES, glotta


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


def assert_one_clear_line(code: int, err: str, *fragments: str) -> None:
    assert "Traceback" not in err, err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("glotta: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], err


@pytest.fixture(scope="module")
def folders(tiny_run, tmp_path_factory) -> dict[str, Path]:
    _, run_dir = tiny_run
    base = tmp_path_factory.mktemp("bad")
    not_model = base / "not-a-model"
    not_model.mkdir()
    (not_model / "notes.txt").write_text("hello")
    a_file = base / "a-file.txt"
    a_file.write_text("Текст для оценки модели.\n")
    empty = base / "empty-run"
    empty.mkdir()
    return {
        "run": run_dir.root,
        "export": run_dir.export,
        "checkpoint": run_dir.checkpoints / "step_00000200",
        "not_model": not_model,
        "file": a_file,
        "empty": empty,
        "base": base,
    }


def _cases(f: dict[str, Path]) -> list[tuple[list[str], list[str]]]:
    """(arguments, fragments the one error line must contain)."""
    missing = str(f["base"] / "does-not-exist")
    tiny = [a for s in TINY_OVERRIDES for a in ("--set", s)]
    new_run = str(f["base"] / "new-run")
    unwritable = str(f["file"] / "run")  # below a file: can never be created
    return [
        (["recipes", "no-such-recipe"], ["no shipped recipe named 'no-such-recipe'", "demo"]),
        (["run", "no-such-recipe", "--run-dir", new_run], ["no-such-recipe"]),
        (["run", missing + ".toml", "--run-dir", new_run], ["does-not-exist.toml", "not exist"]),
        (["run", "demo", "--run-dir", unwritable, *tiny], ["--run-dir", "cannot be written"]),
        (["corpus", "demo", "--run-dir", unwritable], ["--run-dir", "cannot be written"]),
        (["run", "demo", "--run-dir", new_run, *tiny, "--set", "train.max_steps=-1"],
         ["train.max_steps = -1", "0 or more"]),
        (["run", "demo", "--run-dir", new_run, *tiny, "--set", "train.micro_batch_size=0"],
         ["train.micro_batch_size = 0"]),
        (["run", "demo", "--run-dir", new_run, *tiny, "--set", "train.learning_rate=-1e-3"],
         ["train.learning_rate = -0.001"]),
        (["run", "demo", "--run-dir", new_run, *tiny, "--set", "corpus.valid_fraction=1.0"],
         ["corpus.valid_fraction = 1.0", "[0, 1)"]),
        (["run", "demo", "--run-dir", new_run, "--set", f'corpus.inputs=["{missing}/*.txt"]'],
         ["corpus.inputs", "matches no files"]),
        (["run", "demo", "--run-dir", new_run, "--set", 'corpus.inputs=["pkg://no_such_pkg/a"]'],
         ["no_such_pkg", "pip install"]),
        (["run", "demo", "--run-dir", new_run, *tiny, "--set", f'model.init_from="{missing}"'],
         ["model.init_from", "no such folder"]),
        (["run", "demo", "--run-dir", new_run, *tiny, "--set", "train.nope=1"], ["train.nope"]),
        (["run", "demo", "--run-dir", new_run, "--set", "train.max_steps"], ["KEY=VALUE"]),
        (["train", "--run-dir", str(f["empty"]), *tiny], ["no packed shards", "glotta pack"]),
        (["train", "--run-dir", str(f["empty"]), "--resume", "--no-resume"], ["contradict"]),
        (["export", "--run-dir", str(f["empty"]), *tiny], ["no finished training"]),
        (["export", "--run-dir", str(f["empty"]), *tiny, "--gguf", "q4_k"],
         ["export.gguf = 'q4_k'", "f32, f16, q8_0"]),
        (["generate"], ["--model"]),
        (["generate", "--model", missing], ["does-not-exist", "no such folder"]),
        (["generate", "--run-dir", missing], ["does-not-exist", "no such folder"]),
        (["generate", "--model", str(f["not_model"])], ["not-a-model", "glotta export"]),
        (["generate", "--model", str(f["run"])], ["run folder", "glotta export"]),
        (["generate", "--model", str(f["file"])], ["a-file.txt", "not a model folder"]),
        (["generate", "--model", str(f["checkpoint"])], ["no tokenizer.json", "--tokenizer"]),
        (["generate", "--model", str(f["checkpoint"]), "--tokenizer", missing],
         ["--tokenizer", "no such folder"]),
        (["generate", "--model", str(f["export"]), "--top-p", "0"], ["generate.top_p = 0.0"]),
        (["generate", "--model", str(f["export"]), "--max-new-tokens", "-5"],
         ["generate.max_new_tokens = -5"]),
        (["generate", "--model", str(f["export"]), "--temperature", "-1"],
         ["generate.temperature = -1.0"]),
        (["eval", "--model", missing, "--text", str(f["file"])], ["no such folder"]),
        (["eval", "--model", str(f["not_model"]), "--text", str(f["file"])], ["glotta export"]),
        (["eval", "--model", str(f["export"]), "--text", missing], ["--text", "no such file"]),
        (["eval", "--model", str(f["export"])], ["--text"]),
        (["status", "--run-dir", missing], ["does-not-exist", "no such folder"]),
        (["status"], ["--run-dir"]),
        (["tokenizer", "--input", str(f["file"])], ["--out"]),
    ]  # fmt: skip


def test_every_bad_argument_gives_one_clear_line_and_exit_status_2(folders, capsys):
    failures = []
    for argv, fragments in _cases(folders):
        code, _, err = run_cli(capsys, *argv)
        try:
            assert_one_clear_line(code, err, *fragments)
        except AssertionError:
            failures.append(f"glotta {' '.join(argv)}\n  -> exit {code}: {err.strip()[-600:]}")
    assert not failures, "\n".join(failures)
    # A recipe refused before any stage: nothing was created.
    assert not (folders["base"] / "new-run").exists()


def test_all_problems_of_a_recipe_are_reported_at_once(folders, capsys):
    code, _, err = run_cli(
        capsys, "run", "demo", "--run-dir", str(folders["base"] / "r"),
        "--set", "train.max_steps=-1", "--set", "train.micro_batch_size=0",
        "--set", "train.learning_rate=-1", "--set", "generate.top_p=0",
    )  # fmt: skip
    assert code == 2 and "Traceback" not in err
    assert "4 problems" in err
    for key in ("train.max_steps", "train.micro_batch_size", "train.learning_rate", "top_p"):
        assert sum(key in line for line in err.splitlines()) == 1, err


def test_check_prints_the_plan_and_the_problems_without_running(folders, capsys):
    run_dir = folders["base"] / "checked"
    with pytest.raises(SystemExit) as exit_info:
        main(["check", "demo", "--run-dir", str(run_dir), "--set", "train.max_steps=-1"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 2
    assert "corpus     runs: not run yet" in out and "train.max_steps = -1" in out
    assert not run_dir.exists()


def test_check_and_status_of_a_finished_run(tiny_run, capsys):
    recipe_args = [a for s in TINY_OVERRIDES for a in ("--set", s)]
    _, run_dir = tiny_run
    main(["check", "demo", "--run-dir", str(run_dir.root), *recipe_args])
    out = capsys.readouterr().out
    assert "train      skipped: complete" in out
    assert "tokens in the packed train split" in out and "optimizer steps" in out
    main(["status", "--run-dir", str(run_dir.root)])
    out = capsys.readouterr().out
    assert "train      complete" in out and "step 200" in out and "best validation loss" in out


def test_too_many_new_tokens_are_clamped_with_a_notice(folders, capsys):
    main(["generate", "--model", str(folders["export"]), "--max-new-tokens", "100000", "Мы"])
    err = capsys.readouterr().err
    assert "100000" in err and "context" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_an_unwritable_run_folder_is_a_clear_error(folders, capsys, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    code, _, err = run_cli(capsys, "corpus", "demo", "--run-dir", str(locked / "run"))
    assert_one_clear_line(code, err, "cannot be written")


def test_a_real_subprocess_shows_no_traceback():
    result = glotta("generate", "--model", "/no/such/model/folder", "--top-p", "0.5")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == "glotta: error: --model /no/such/model/folder: no such folder"


@pytest.mark.parametrize(
    "name, damage, named",
    [
        ("tokenizer.json", lambda b: b'{"version": "1.0", "model": 5}', "is not a readable tokenizer"),
        ("tokenizer.json", lambda b: b[: len(b) // 2], "is not a readable tokenizer"),
        ("tokenizer.json", lambda b: b"\x00\xff not json", "is not a readable tokenizer"),
        ("config.json", lambda b: b[: len(b) // 2], "is not a readable model config"),
        ("config.json", lambda b: b'{"model_type": "no-such-model"}', "is not a readable model config"),
        ("model.safetensors", lambda b: b[: len(b) // 2], "is not readable weights"),
        ("model.safetensors", lambda b: b"\xff" * 8 + b[8:], "is not readable weights"),
        ("model.safetensors", lambda b: b"garbage" * 100, "is not readable weights"),
    ],
)  # fmt: skip
def test_a_damaged_file_in_a_model_folder_is_named(name, damage, named, folders, tmp_path, capsys):
    """Before: a damaged config.json gave transformers' message over several lines and damaged
    weights a SafetensorError traceback."""
    broken = tmp_path / "broken"
    shutil.copytree(folders["export"], broken)
    (broken / name).write_bytes(damage((broken / name).read_bytes()))
    text = str(folders["file"])
    for command in (
        ["generate", "--model", str(broken), "hello"],
        ["eval", "--model", str(broken), "--text", text],
    ):
        code, _, err = run_cli(capsys, *command)
        assert_one_clear_line(code, err, f"{broken / name} {named}", "restore it")


def test_an_internal_error_shows_the_traceback_and_asks_for_a_report(folders, monkeypatch, capsys):
    """A bug (here: an exception no command expects, raised where `glotta status` reads the run)
    reaches the user as its traceback plus one line asking for a report, exit status 1."""

    def buggy(run_dir):
        raise ZeroDivisionError("a bug in glotta")

    monkeypatch.setattr("glotta.runinfo.format_status", buggy)
    with pytest.raises(SystemExit) as exit_info:
        main(["status", "--run-dir", str(folders["export"].parent)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1
    assert "Traceback" in err and "ZeroDivisionError: a bug in glotta" in err
    assert "please report it" in err.splitlines()[-1]
