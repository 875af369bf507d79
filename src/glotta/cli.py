"""Command line: one subcommand per stage, plus ``run`` for all of them. No logic lives here.

Every stage command accepts a recipe (shipped name or TOML path), ``--run-dir``, repeated
``--set section.key=value`` and one flag per field of its own config section, generated from the
config dataclasses so ``--help`` documents every option.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import traceback
from pathlib import Path

from glotta import __version__
from glotta.cli_options import (
    add_config_flags,
    add_recipe_args,
    flag_overrides,
    resolve_recipe,
    resolve_run,
)
from glotta.diskwrite import disk_error, write_failure
from glotta.errors import GlottaError
from glotta.recipe import load_recipe, shipped_recipes
from glotta.rundir import RunDir
from glotta.runlock import hold_run_dir, release_run_dirs

# ---------------------------------------------------------------------------------------------
# Subcommands


def cmd_corpus(args):
    from glotta.corpus import run_corpus

    recipe, run_dir = resolve_run(args)
    run_corpus(recipe.corpus, run_dir.corpus)


def cmd_tokenizer(args):
    from glotta.tokenizer.stage import run_tokenizer, train_tokenizer_on_files

    if args.input:
        if not args.out:
            raise GlottaError("--input needs --out DIR (where to write the tokenizer)")
        recipe = resolve_recipe(args)
        train_tokenizer_on_files(
            recipe.tokenizer, recipe.corpus, [Path(p) for p in args.input], args.out
        )
        return
    recipe, run_dir = resolve_run(args)
    run_tokenizer(recipe.tokenizer, run_dir)


def cmd_pack(args):
    from glotta.tokenizer.pack import run_pack

    recipe, run_dir = resolve_run(args)
    run_pack(recipe.pack, run_dir)


def cmd_train(args):
    from glotta.train.loop import run_train

    recipe, run_dir = resolve_run(args)
    resume = _resume_mode(args)
    run_train(recipe.train, recipe.model, run_dir, resume=resume)


def cmd_distill(args):
    from glotta.distill import run_distill

    recipe, run_dir = resolve_run(args)
    resume = _resume_mode(args)
    run_distill(recipe.distill, run_dir, recipe.train, recipe.model, resume=resume)


def cmd_compare(args):
    from glotta.evaluate.compare import format_comparison, run_compare

    recipe = resolve_recipe(args)
    if args.run_dir and args.run_dir.is_dir():  # the comparison is written into the run
        hold_run_dir(args.run_dir, "compare")
    result = run_compare(
        recipe.eval,
        RunDir(args.run_dir) if args.run_dir else None,
        teacher=args.teacher,
        students=args.model or [],
        scratch=args.scratch or [],
        text=args.text,
        tokenizer=args.tokenizer,
        speed_tokens=args.speed_tokens,
        ner_cfg=recipe.ner,
    )
    if args.run_dir:
        print(
            f"compare: written to {args.run_dir / 'eval' / 'compare.json'}; `glotta export` puts "
            "it on the model card",
            file=sys.stderr,
        )
    print(json.dumps(result, indent=2) if args.json else format_comparison(result["rows"]))


def cmd_eval(args):
    from glotta.evaluate.stage import evaluate_folders, format_table, run_eval

    if args.model:
        from glotta.validate import check_model_folder

        if not args.text:
            raise GlottaError("--model needs --text FILE (a .txt or .jsonl file to evaluate on)")
        if args.run_dir:
            raise GlottaError(
                "--model evaluates folders on --text and --run-dir evaluates a run's own model: "
                "give one of them (a run's export folder can be given as --model RUN_DIR/export)"
            )
        if not args.text.is_file():
            raise GlottaError(f"--text {args.text}: no such file")
        for model in args.model:
            check_model_folder(model, args.tokenizer)
        # the recipe, if given, brings its [eval] settings (context, stride, batch size)
        rows = evaluate_folders(args.model, args.text, resolve_recipe(args).eval, args.tokenizer)
        print(json.dumps(rows, indent=2) if args.json else format_table(rows))
        return
    recipe, run_dir = resolve_run(args)
    results = run_eval(recipe.eval, run_dir)
    if args.json:
        print(json.dumps(results, indent=2))


def cmd_eval_ner(args):
    from glotta.evaluate.ner import format_ner_table, run_model_folders, run_ner
    from glotta.pipeline import default_run_dir
    from glotta.rundir import write_json_atomic

    recipe = resolve_recipe(args)
    cfg = recipe.ner
    run_dir = None  # results go to RUN_DIR/eval/ner.json only for the run's own model
    if cfg.model:
        model_dir, tokenizer_dir = Path(cfg.model), cfg.tokenizer or None
        if args.run_dir and model_dir.resolve().is_relative_to(args.run_dir.resolve()):
            run_dir = RunDir(args.run_dir)
    else:
        run_dir = RunDir(args.run_dir or default_run_dir(recipe))
        model_dir, tokenizer_dir = run_model_folders(run_dir)
        tokenizer_dir = cfg.tokenizer or tokenizer_dir
    if run_dir is not None:  # its results are written into the run
        hold_run_dir(run_dir.root, "eval ner")
    result = run_ner(cfg, model_dir, tokenizer_dir)
    if run_dir is not None:
        run_dir.eval.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run_dir.eval / "ner.json", result)
        print(
            f"ner: results written to {run_dir.eval / 'ner.json'}; `glotta export` puts them on "
            "the model card",
            file=sys.stderr,
        )
    print(
        json.dumps(result, indent=2, ensure_ascii=False) if args.json else format_ner_table(result)
    )


def cmd_generate(args):
    from glotta.generate import generate_to_stdout
    from glotta.validate import check_model_folder, generate_problems, raise_problems

    recipe = load_recipe(None, args.overrides)
    flags = flag_overrides(args).get("generate", {})
    cfg = dataclasses.replace(recipe.generate, **flags)
    raise_problems(generate_problems([], dataclasses.replace(recipe, generate=cfg)))
    model_dir = args.model or (args.run_dir / "export" if args.run_dir else None)
    if model_dir is None:
        raise GlottaError("give --model DIR (an exported folder or checkpoint) or --run-dir")
    if args.run_dir and not args.model and not args.run_dir.is_dir():
        raise GlottaError(f"--run-dir {args.run_dir}: no such folder")
    check_model_folder(str(model_dir), args.tokenizer)
    generate_to_stdout(Path(model_dir), args.prompt or cfg.prompt, cfg, args.tokenizer)


def cmd_serve(args):
    from glotta.serve import run_server
    from glotta.serve.app import ServeConfig
    from glotta.serve.models import model_id
    from glotta.serve.schemas import Limits

    for flag in ("port", "max_batch", "max_queue", "max_tokens", "max_prompt_tokens",
                 "max_body_bytes"):  # fmt: skip
        value = getattr(args, flag)
        if value < (0 if flag == "port" else 1):
            raise GlottaError(f"--{flag.replace('_', '-')} must be positive, got {value}")
    model_dir = Path(args.model_dir)
    limits = Limits(
        max_batch=args.max_batch,
        max_queue=args.max_queue,
        max_tokens=args.max_tokens,
        max_prompt_tokens=args.max_prompt_tokens,
        max_body_bytes=args.max_body_bytes,
    )
    folder = model_dir.resolve().name
    name = args.name or model_id(model_dir)
    # Requests that name the folder (the default id before ids came from the card) still work.
    aliases = () if args.name or name == folder else (folder,)
    api_key = args.api_key or os.environ.get("GLOTTA_API_KEY") or None
    run_server(ServeConfig(model_dir, name, args.host, args.port, api_key, limits, aliases))


def cmd_export(args):
    from glotta.export.stage import run_export

    recipe, run_dir = resolve_run(args)
    out = run_export(recipe.export, recipe.recipe, recipe.generate, run_dir)
    print(f"exported to {out}")


def cmd_run(args):
    from glotta.pipeline import run_recipe

    recipe, run_dir = resolve_run(args)
    resume = "never" if args.no_resume else "auto"
    timings = run_recipe(recipe, run_dir, force=args.force, resume=resume)
    total = sum(timings.values())
    print(
        "stage times: "
        + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items())
        + f"; total {total:.0f}s; run directory {run_dir.root}"
    )
    if args.sample:
        export_dir = Path(recipe.export.out) if recipe.export.out else run_dir.export
        from glotta.generate import generate_to_stdout

        print("\nsample:")
        generate_to_stdout(
            export_dir, recipe.generate.prompt or recipe.recipe.widget_text, recipe.generate
        )


def cmd_check(args):
    from glotta.pipeline import default_run_dir
    from glotta.runinfo import format_check

    recipe = resolve_recipe(args)
    run_dir = RunDir(args.run_dir or default_run_dir(recipe))
    text, problems = format_check(recipe, run_dir, force=args.force)
    print(text)
    if problems:
        sys.exit(2)


def cmd_status(args):
    from glotta.runinfo import format_status

    if args.run_dir is None:
        raise GlottaError("give --run-dir DIR (the run to describe)")
    print(format_status(RunDir(args.run_dir)))


def cmd_trim_vocab(args):
    import dataclasses
    import json

    from glotta.corpus.process import process_stream
    from glotta.corpus.readers import iter_documents
    from glotta.distill.trim_vocab import trim_vocabulary

    recipe = resolve_recipe(args)
    # The texts are read and cleaned as the corpus stage would (formats, markup, filters).
    source = dataclasses.replace(recipe.corpus, inputs=list(args.input), near_dedup=False)
    texts = (d.text for d in process_stream(source, iter_documents(source)) if not d.drop)
    report = trim_vocabulary(args.model, texts, args.out, args.min_count, args.keep_characters)
    print(json.dumps(report, indent=2))


def cmd_recipes(args):
    from importlib.resources import files

    if args.name:
        resource = files("glotta.recipes") / f"{args.name}.toml"
        if not resource.is_file():
            raise GlottaError(
                f"no shipped recipe named {args.name!r}; shipped: {', '.join(shipped_recipes())}"
            )
        print(resource.read_text("utf-8"))
        return
    for name in shipped_recipes():
        recipe = load_recipe(name)
        print(f"{name:<26} {recipe.recipe.description}")


# ---------------------------------------------------------------------------------------------


def _resume_mode(args) -> str:
    """--resume / --no-resume / neither -> 'always' / 'never' / 'auto'."""
    if args.resume and args.no_resume:
        raise GlottaError("--resume and --no-resume contradict each other; give one")
    return "always" if args.resume else ("never" if args.no_resume else "auto")


def _add_resume_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--resume",
        action="store_true",
        help="Require resuming from the latest checkpoint (default: resume if one exists).",
    )
    p.add_argument(
        "--no-resume", action="store_true", help="Start from scratch even if checkpoints exist."
    )


def _add_serve_parser(sub) -> None:
    text = (
        "Serve an exported model over HTTP: OpenAI-compatible /v1/completions and "
        "/v1/chat/completions (causal LMs; concurrent requests decoded together in one batch), "
        "/v1/embeddings and /v1/fill-mask (BERT/RoBERTa encoders), /v1/models, /health, "
        "/metrics (Prometheus), and a playground page at /."
    )
    p = sub.add_parser("serve", help=text, description=text)
    p.add_argument("model_dir", metavar="MODEL_DIR", help="Exported glotta folder or HF folder.")
    p.add_argument("--host", default="127.0.0.1",
                   help="Address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 "
                   "shares it on your network).")  # fmt: skip
    p.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000).")
    p.add_argument(
        "--name",
        help="Model id that clients send as 'model' (default: the model card's model name, "
        "i.e. the recipe name, else the folder name).",
    )
    p.add_argument("--api-key",
                   help="Require 'Authorization: Bearer KEY' on /v1/ endpoints (default: "
                   "$GLOTTA_API_KEY, else no key).")  # fmt: skip
    p.add_argument("--max-batch", type=int, default=8,
                   help="Sequences decoded together (concurrent decode slots; each choice of a "
                   "request takes one). Default: 8.")  # fmt: skip
    p.add_argument("--max-queue", type=int, default=64,
                   help="Sequences that may wait for a free slot; beyond that requests get 503 "
                   "with Retry-After. Default: 64.")  # fmt: skip
    p.add_argument(
        "--max-tokens",
        type=int,
        default=512,
        help="Largest max_tokens a request may ask for (default: 512).",
    )
    p.add_argument("--max-prompt-tokens", type=int, default=2048,
                   help="Longest prompt in tokens (also capped by the model's context); longer "
                   "prompts get 400. Default: 2048.")  # fmt: skip
    p.add_argument(
        "--max-body-bytes",
        type=int,
        default=1_000_000,
        help="Largest request body; larger ones get 413. Default: 1000000.",
    )
    p.set_defaults(func=cmd_serve)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="glotta",
        description="Build a language model for your language: corpus -> tokenizer -> pack -> "
        "train -> eval -> export. `glotta run RECIPE` runs every stage.",
    )
    parser.add_argument("--version", action="version", version=f"glotta {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def stage(name, func, help_text, sections, recipe_positional=True):
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_recipe_args(p, recipe_positional)
        for section in sections:
            add_config_flags(p, section)
        p.set_defaults(func=func)
        return p

    stage("corpus", cmd_corpus, "Read, clean, deduplicate and split raw text.", ["corpus"])
    p = stage("tokenizer", cmd_tokenizer, "Train a BPE or Unigram tokenizer.", ["tokenizer"])
    p.add_argument(
        "--input",
        nargs="+",
        metavar="FILE",
        help="Train standalone on these text/JSONL files instead of the run's corpus.",
    )
    p.add_argument("--out", type=Path, help="Output folder for --input mode.")
    stage("pack", cmd_pack, "Tokenize the splits into binary token shards.", ["pack"])
    p = stage(
        "train",
        cmd_train,
        "Pretrain the model (single process or under torchrun).",
        ["train", "model"],
    )
    _add_resume_flags(p)
    p = stage(
        "distill",
        cmd_distill,
        "Distill a teacher into a student trained as [train] says (single process or under "
        "torchrun): a causal LM with the run's tokenizer into a student shaped by [model], or, "
        "with train.objective = 'mlm', a BERT-family encoder into its bottom layers "
        "(distill.student_layers; hidden-state and attention MSE).",
        ["distill", "train", "model"],
    )
    _add_resume_flags(p)
    p = stage(
        "compare",
        cmd_compare,
        "Teacher vs distilled student vs the same student trained from scratch: parameters, "
        "generation speed, held-out perplexity, bits per byte and retention (encoders: forward "
        "speed and NER F1 with the recipe's [ner] settings, changed with --set ner.KEY=VALUE).",
        ["eval"],
    )
    p.add_argument("--teacher", help="Teacher folder or hub id (default: the one --run-dir used).")
    p.add_argument(
        "--model",
        action="append",
        metavar="DIR",
        help="Distilled student: HF folder or run directory (default: --run-dir; repeatable).",
    )
    p.add_argument(
        "--scratch",
        action="append",
        metavar="DIR",
        help="The same student trained from scratch: HF folder or run directory (repeatable).",
    )
    p.add_argument("--text", type=Path, help="Held-out text (default: the run's eval.split).")
    p.add_argument("--tokenizer", type=Path, help="Tokenizer for folders without one.")
    p.add_argument(
        "--speed-tokens", type=int, default=64, help="Tokens generated per speed measurement."
    )
    p.add_argument("--json", action="store_true", help="Print the comparison as JSON.")
    p = stage(
        "eval",
        cmd_eval,
        "Perplexity and bits per byte on held-out text (`glotta eval ner ...`: named entities).",
        ["eval"],
    )
    p.add_argument(
        "--model",
        action="append",
        metavar="DIR",
        help="Evaluate this HF folder instead of the run (repeat for a table).",
    )
    p.add_argument("--text", type=Path, help="Text (.txt paragraphs or .jsonl) for --model.")
    p.add_argument("--tokenizer", help="Tokenizer folder if the model folder has none.")
    p.add_argument("--json", action="store_true", help="Print results as JSON.")
    p = stage(
        "eval-ner",
        cmd_eval_ner,
        "Fine-tune an encoder for named entities on CoNLL column files and report entity-level "
        "F1 over several seeds (also spelled `glotta eval ner`).",
        ["ner"],
    )
    p.add_argument("--train", dest="ner__train_file", metavar="FILE", help="Same as --train-file.")
    p.add_argument("--test", dest="ner__test_file", metavar="FILE", help="Same as --test-file.")
    p.add_argument("--json", action="store_true", help="Print results as JSON.")
    p = stage(
        "generate",
        cmd_generate,
        "Generate text, streamed as it comes.",
        ["generate"],
        recipe_positional=False,
    )
    p.add_argument("prompt", nargs="?", default="", help="Prompt text.")
    p.add_argument("--model", help="Model folder (exported or a checkpoint).")
    p.add_argument("--tokenizer", help="Tokenizer folder if the model folder has none.")
    _add_serve_parser(sub)
    stage("export", cmd_export, "Write a Hugging Face folder with a model card.", ["export"])
    p = stage("run", cmd_run, "Run every stage in order, skipping finished ones.", [])
    p.add_argument("--force", action="store_true", help="Re-run stages even if complete.")
    p.add_argument(
        "--no-resume",
        action="store_true",
        help="Train from scratch: delete the run's checkpoints instead of continuing them "
        "(needed after changing the corpus, tokenizer or model/training settings of a run).",
    )
    p.add_argument(
        "--sample",
        action="store_true",
        help="Print a generated sample from the exported model at the end.",
    )
    p = stage(
        "check",
        cmd_check,
        "Check a recipe without running anything: print the resolved recipe, every problem "
        "(exit status 2 if any), the stages `glotta run` would run and why, and the estimated "
        "tokens and steps.",
        [],
    )
    p.add_argument("--force", action="store_true", help="Plan as `glotta run --force` would.")
    p = sub.add_parser(
        "status",
        help="Where a run stands: stages done, training step, best validation loss.",
        description="Where a run stands: stages done, training step, best validation loss.",
    )
    p.add_argument("--run-dir", type=Path, help="The run directory to describe.")
    p.set_defaults(func=cmd_status)
    p = stage(
        "trim-vocab",
        cmd_trim_vocab,
        "Shrink a WordPiece encoder (e.g. mBERT) to the tokens your corpus uses: a copy with "
        "fewer embedding rows that computes the same on that language.",
        ["corpus"],
        recipe_positional=False,
    )
    p.add_argument("--model", required=True, help="Encoder folder (or hub id) with tokenizer.json.")
    p.add_argument(
        "--input", nargs="+", required=True, metavar="FILE", help="Text in the target language."
    )
    p.add_argument("--out", type=Path, required=True, help="Folder for the trimmed model.")
    p.add_argument(
        "--min-count", type=int, default=1, help="Keep tokens used at least this often (default 1)."
    )
    p.add_argument(
        "--keep-characters",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Keep every single-character token so unseen words still split (default: on).",
    )
    p = sub.add_parser("recipes", help="List shipped recipes, or print one.")
    p.add_argument("name", nargs="?", help="Recipe to print.")
    p.set_defaults(func=cmd_recipes)
    return parser


def main(argv: list[str] | None = None) -> None:
    # transformers' per-load progress bars and advice drown our own progress output; errors stay.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["eval", "ner"]:  # `glotta eval ner` is the eval-ner command
        argv = ["eval-ner", *argv[2:]]
    args = build_parser().parse_args(argv)
    try:
        try:
            args.func(args)
        finally:
            release_run_dirs()  # main() may run again in this process (tests, notebooks)
    except GlottaError as exc:
        print(f"glotta: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("glotta: interrupted", file=sys.stderr)
        sys.exit(130)
    except PermissionError as exc:  # a folder or file the user cannot write or read
        print(f"glotta: error: permission denied: {exc.filename or exc}", file=sys.stderr)
        sys.exit(2)
    except Exception as exc:
        # A failed write no stage named (a log line, a metrics file): one line all the same.
        if (error := disk_error(exc)) is None:
            _internal_error()
        print(f"glotta: error: {write_failure(None, error)}", file=sys.stderr)
        sys.exit(2)


def _internal_error() -> None:
    """Anything else is glotta's fault: the traceback, and a line that asks to report it."""
    traceback.print_exc()
    print(
        "glotta: internal error: this is a bug in glotta, not a problem with your input; please "
        f"report it with the command you ran and the traceback above (glotta {__version__})",
        file=sys.stderr,
    )
    sys.exit(1)
