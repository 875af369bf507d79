"""Check a whole recipe before any stage runs: every problem at once, one line each.

A mistake in ``[train]`` must not cost the hours of the corpus and tokenizer stages before it.
:func:`recipe_problems` checks the values of every section (types are checked when the TOML is
read, see :mod:`glotta.config`), the rules that tie sections together, that the run directory
can be written, and that the files and folders the stages about to run will read exist. The
model-architecture rules (presets, head counts, positions, objectives) belong to the model
families and are asked of :func:`glotta.models.model_setting_problems`.

    glotta check RECIPE      # prints the problems, or the plan: stages, reasons, tokens, steps
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable
from pathlib import Path

from glotta.config import GGUF_TYPES, DistillConfig, Recipe, TokenizerConfig, TrainConfig
from glotta.errors import GlottaError

MLM_TOKENIZERS = ("wordpiece", "roberta-bpe")
STAGES = ("corpus", "tokenizer", "pack", "train", "distill", "eval", "ner", "export")


class _Problems(list):
    """Collects one line per problem."""

    def need(self, ok: bool, key: str, value, rule: str) -> None:
        if not ok:
            self.append(f"{key} = {value!r}: {rule}")

    def positive(self, section, name: str, prefix: str) -> None:
        value = getattr(section, name)
        self.need(value > 0, f"{prefix}.{name}", value, "must be greater than 0")

    def non_negative(self, section, name: str, prefix: str, zero: str = "") -> None:
        value = getattr(section, name)
        rule = "must be 0 or more" + (f" ({zero})" if zero else "")
        self.need(value >= 0, f"{prefix}.{name}", value, rule)

    def fraction(self, section, name: str, prefix: str, upper_open: bool = True) -> None:
        value = getattr(section, name)
        if upper_open:
            self.need(0 <= value < 1, f"{prefix}.{name}", value, "must be in [0, 1)")
        else:
            self.need(0 <= value <= 1, f"{prefix}.{name}", value, "must be in [0, 1]")


def _looks_local(value: str) -> bool:
    """A folder rather than a hub id ('owner/name' or 'name')."""
    return value.startswith(("/", ".", "~")) or value.count("/") > 1


def _check_folder(problems: _Problems, key: str, value: str, needs: str) -> None:
    """A model or tokenizer given as a folder must exist and hold ``needs``."""
    if not value:
        return
    path = Path(os.path.expanduser(value))
    if path.is_dir():
        problems.need((path / needs).is_file(), key, value, f"the folder has no {needs}")
    elif path.exists():
        problems.append(f"{key} = {value!r}: is a file, not a folder")
    elif _looks_local(value):
        problems.append(f"{key} = {value!r}: no such folder")


def _check_file(problems: _Problems, key: str, value: str) -> None:
    """A file path, or pkg://PACKAGE/path inside an installed package (as the NER stage reads)."""
    from glotta.evaluate.ner_data import resolve_data_path

    if not value:
        return
    try:
        found = resolve_data_path(value).is_file()
    except GlottaError as exc:
        problems.append(f"{key} = {value!r}: {exc}")
        return
    if not found:
        problems.append(f"{key} = {value!r}: no such file")


def _corpus(p: _Problems, recipe: Recipe, check_inputs: bool) -> None:
    c = recipe.corpus
    for name in ("min_chars", "max_chars", "max_documents", "dropped_samples", "workers", "tasks"):
        p.non_negative(c, name, "corpus")
    if c.max_chars and c.max_chars <= c.min_chars:
        p.append(
            f"corpus.max_chars = {c.max_chars}: must be greater than corpus.min_chars "
            f"({c.min_chars}), or 0 for no limit"
        )
    p.fraction(c, "valid_fraction", "corpus")
    p.fraction(c, "test_fraction", "corpus")
    fractions_ok = 0 <= c.valid_fraction < 1 and 0 <= c.test_fraction < 1
    if fractions_ok and c.valid_fraction + c.test_fraction >= 1:
        p.append(
            f"corpus.valid_fraction + corpus.test_fraction = "
            f"{c.valid_fraction + c.test_fraction:g}: leaves nothing to train on (must be < 1)"
        )
    p.fraction(c, "language_threshold", "corpus", upper_open=False)
    p.fraction(c, "max_not_text_fraction", "corpus", upper_open=False)
    p.fraction(c, "max_undecodable_fraction", "corpus", upper_open=False)
    from glotta.corpus.encoding import encoding_problem

    if problem := encoding_problem(c.encoding):
        p.append(f"corpus.encoding = {c.encoding!r}: {problem}")
    for f in dataclasses.fields(c):
        if f.name.startswith("quality_") and f.name.endswith("fraction"):
            p.fraction(c, f.name, "corpus", upper_open=False)
    for name in ("quality_min_mean_word_length", "quality_max_symbol_word_ratio"):
        p.non_negative(c, name, "corpus")
    if c.quality_max_mean_word_length <= c.quality_min_mean_word_length:
        p.append(
            f"corpus.quality_max_mean_word_length = {c.quality_max_mean_word_length}: must be "
            f"greater than quality_min_mean_word_length ({c.quality_min_mean_word_length})"
        )
    p.need(0 < c.near_dedup_threshold <= 1, "corpus.near_dedup_threshold", c.near_dedup_threshold,
           "must be in (0, 1]")  # fmt: skip
    for name in ("near_dedup_ngram", "near_dedup_permutations", "near_dedup_memory_mb"):
        p.positive(c, name, "corpus")
    for pattern in c.boilerplate_patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            p.append(f"corpus.boilerplate_patterns: {pattern!r} is not a regular expression: {exc}")
    for code in c.languages:
        p.need(bool(re.fullmatch(r"[a-z]{2,3}", code)), "corpus.languages", code,
               "must be ISO 639 codes such as 'sv'")  # fmt: skip
    if not check_inputs:
        return
    from glotta.corpus.inputs import resolve_inputs

    specs = c.inputs or [""]
    for spec in specs:  # one problem per entry, not just the first
        try:
            resolve_inputs(dataclasses.replace(c, inputs=[spec] if spec else []))
        except GlottaError as exc:
            p.append(str(exc))


def _tokenizer(p: _Problems, recipe: Recipe, check_files: bool) -> None:
    t = recipe.tokenizer
    if not t.pretrained:
        p.need(t.vocab_size >= 2, "tokenizer.vocab_size", t.vocab_size, "must be at least 2")
    elif check_files:
        _check_folder(p, "tokenizer.pretrained", t.pretrained, "tokenizer.json")
    p.non_negative(t, "min_frequency", "tokenizer")
    p.positive(t, "max_training_texts", "tokenizer")
    p.positive(t, "trim_min_count", "tokenizer")
    p.need(0 < t.character_coverage <= 1, "tokenizer.character_coverage", t.character_coverage,
           "must be in (0, 1]")  # fmt: skip
    if t.trim_vocab and not t.pretrained:
        p.append("tokenizer.trim_vocab = true: needs tokenizer.pretrained (a WordPiece tokenizer)")
    p.non_negative(recipe.pack, "threads", "pack", "0 = all cores")
    p.positive(recipe.pack, "batch_documents", "pack")


def _train(p: _Problems, recipe: Recipe, check_files: bool) -> None:
    # Imported here: the model families import transformers, which `glotta --help` should not.
    from glotta.models import model_setting_problems

    t, m = recipe.train, recipe.model
    p.extend(model_setting_problems(m, t))
    p.extend(objective_problems(t, recipe.tokenizer))
    for name in ("block_size", "micro_batch_size", "gradient_accumulation_steps", "learning_rate",
                 "adam_eps", "eval_batches", "checkpoint_interval", "log_interval",
                 "keep_checkpoints"):  # fmt: skip
        p.positive(t, name, "train")
    for name in ("global_batch_size", "warmup_steps", "weight_decay", "grad_clip"):
        p.non_negative(t, name, "train")
    p.non_negative(t, "max_steps", "train", "0 = derive from epochs")
    p.non_negative(t, "eval_interval", "train", "0 = only at the end")
    if t.max_steps == 0:
        p.need(t.epochs > 0, "train.epochs", t.epochs, "must be greater than 0 when max_steps = 0")
    p.fraction(t, "min_lr_ratio", "train", upper_open=False)
    p.fraction(t, "adam_beta1", "train")
    p.fraction(t, "adam_beta2", "train")
    p.fraction(t, "cooldown_fraction", "train", upper_open=False)
    p.fraction(t, "muon_momentum", "train")
    p.non_negative(t, "muon_learning_rate", "train", "0 = learning_rate")
    p.positive(t, "muon_ns_steps", "train")
    if t.optimizer == "muon" and t.parallelism == "fsdp":
        p.append(
            "train.optimizer = 'muon' with train.parallelism = 'fsdp': Muon orthogonalises whole "
            "matrices, which FSDP shards; use parallelism = 'ddp' or optimizer = 'adamw'"
        )
    if t.global_batch_size and t.micro_batch_size > 0 and t.global_batch_size % t.micro_batch_size:
        p.append(
            f"train.global_batch_size = {t.global_batch_size}: must be a multiple of "
            f"train.micro_batch_size ({t.micro_batch_size})"
        )
    p.need(t.device in ("auto", "cpu", "cuda") or bool(re.fullmatch(r"cuda:\d+", t.device)),
           "train.device", t.device, "must be 'auto', 'cpu', 'cuda' or 'cuda:N'")  # fmt: skip
    for i, phase in enumerate(t.phases, start=1):
        where = f"train.phases[{i}]"
        for name in ("block_size", "max_steps", "epochs", "learning_rate", "micro_batch_size",
                     "global_batch_size"):  # fmt: skip
            p.non_negative(phase, name, where, "0 = as in [train]")
        p.need(phase.warmup_steps >= -1, f"{where}.warmup_steps", phase.warmup_steps,
               "must be -1 (as in [train]) or more")  # fmt: skip
    for name in ("n_layer", "n_embd", "n_head", "n_kv_head", "n_inner", "n_positions"):
        p.non_negative(m, name, "model", "0 = from the preset")
    p.non_negative(m, "rope_theta", "model", "0 = the preset's")
    p.fraction(m, "dropout", "model")
    if check_files:
        _check_folder(p, "model.init_from", m.init_from, "config.json")


def objective_problems(train: TrainConfig, tokenizer: TokenizerConfig) -> list[str]:
    """Masked-LM pretraining needs a mask probability in (0, 1) and a tokenizer with mask,
    classifier and separator tokens."""
    found = []
    if train.objective != "mlm":
        return found
    if not 0.0 < train.mlm_probability < 1.0:
        found.append(f"train.mlm_probability = {train.mlm_probability} must be in (0, 1)")
    if not (tokenizer.pretrained or tokenizer.kind in MLM_TOKENIZERS):
        found.append(
            "train.objective = 'mlm' needs a tokenizer with a mask token: set "
            "tokenizer.kind = 'wordpiece' (BERT) or 'roberta-bpe' (RoBERTa), or "
            f"tokenizer.pretrained (got tokenizer.kind = {tokenizer.kind!r})"
        )
    return found


def distill_setting_problems(cfg: DistillConfig, train_cfg: TrainConfig) -> list[str]:
    """The loss weights of the objective's distillation: >= 0 and not all 0; T > 0."""
    if train_cfg.objective == "mlm":
        alphas = {"alpha_hidden": cfg.alpha_hidden, "alpha_attention": cfg.alpha_attention}
    else:
        alphas = {"alpha_ce": cfg.alpha_ce, "alpha_clm": cfg.alpha_clm, "alpha_cos": cfg.alpha_cos}
    found = []
    negative = [k for k, v in alphas.items() if v < 0]
    if negative or not sum(alphas.values()) > 0:
        found.append(
            f"distill.{', '.join(negative) or 'alpha_*'}: the weights must be >= 0 and not all "
            f"0 (got {alphas})"
        )
    if not cfg.temperature > 0:
        found.append(f"distill.temperature = {cfg.temperature} must be positive")
    return found


def _distill(p: _Problems, recipe: Recipe, check_files: bool) -> None:
    d = recipe.distill
    if not d.teacher:
        return
    p.extend(distill_setting_problems(d, recipe.train))
    if check_files:
        _check_folder(p, "distill.teacher", d.teacher, "config.json")
        _check_folder(p, "distill.teacher_tokenizer", d.teacher_tokenizer, "tokenizer.json")


def _later_stages(p: _Problems, recipe: Recipe, check_files: bool) -> None:
    p.non_negative(recipe.eval, "stride", "eval", "0 = half the context")
    p.positive(recipe.eval, "batch_size", "eval")
    generate_problems(p, recipe)
    n = recipe.ner
    if n.train_file:
        for name in ("epochs", "learning_rate", "batch_size", "max_length"):
            p.positive(n, name, "ner")
        p.fraction(n, "warmup_fraction", "ner")
        p.need(bool(n.seeds), "ner.seeds", n.seeds, "needs at least one seed")
        if check_files:
            _check_file(p, "ner.train_file", n.train_file)
            _check_file(p, "ner.test_file", n.test_file)
            _check_folder(p, "ner.model", n.model, "config.json")


def _gguf(p: _Problems, recipe: Recipe) -> None:
    for gguf_type in recipe.export.gguf:
        p.need(gguf_type in GGUF_TYPES, "export.gguf", gguf_type,
               f"is not a GGUF type glotta writes ({', '.join(GGUF_TYPES)})")  # fmt: skip
    if not recipe.export.gguf:
        return
    p.need(recipe.train.objective == "clm", "export.gguf", recipe.export.gguf,
           "GGUF is written for causal LMs (train.objective = 'clm') only")  # fmt: skip
    t = recipe.tokenizer
    p.need(bool(t.pretrained) or t.kind in ("bpe", "unigram"), "export.gguf", recipe.export.gguf,
           f"needs a bpe or unigram tokenizer (tokenizer.kind = {t.kind!r})")  # fmt: skip


def generate_problems(p: list[str], recipe: Recipe) -> list[str]:
    """Sampling settings (also checked alone by `glotta generate`)."""
    problems = p if isinstance(p, _Problems) else _Problems()
    g = recipe.generate
    problems.positive(g, "max_new_tokens", "generate")
    problems.non_negative(g, "temperature", "generate", "0 = greedy")
    problems.non_negative(g, "top_k", "generate", "0 = off")
    problems.need(0 < g.top_p <= 1, "generate.top_p", g.top_p, "must be in (0, 1] (1 = off)")
    problems.positive(g, "repetition_penalty", "generate")
    return problems


def writable_problem(folder: Path, key: str = "--run-dir") -> str | None:
    """Why ``folder`` cannot be created or written, or None."""
    path = folder.resolve()
    if path.exists() and not path.is_dir():
        return f"{key} {folder}: is a file, not a folder"
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return f"{key} {folder}: cannot be written ({existing} is a file); choose another"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{key} {folder}: cannot be written ({existing} is not writable); choose another"
    return None


def recipe_problems(
    recipe: Recipe, run_dir: Path | None = None, stages: Iterable[str] = STAGES
) -> list[str]:
    """Every problem of the recipe, one line each; files are checked for ``stages`` only.

    Values are checked in every section (a broken [train] is worth knowing about before the
    corpus stage); the files and folders a stage reads only when that stage is about to run
    (the corpus inputs of a finished corpus stage may be long gone).
    """
    stages = set(stages)
    p = _Problems()
    if run_dir is not None and (problem := writable_problem(run_dir)):
        p.append(problem)
    _corpus(p, recipe, "corpus" in stages)
    _tokenizer(p, recipe, "tokenizer" in stages)
    _train(p, recipe, bool({"train", "distill"} & stages))
    _distill(p, recipe, "distill" in stages)
    _later_stages(p, recipe, "ner" in stages)
    _gguf(p, recipe)
    if "export" in stages and recipe.export.out:
        if problem := writable_problem(Path(recipe.export.out), "export.out"):
            p.append(problem)
    return list(p)


def raise_problems(problems: list[str], origin: str = "recipe") -> None:
    """One problem: one line. Several: a count, then one line each."""
    if len(problems) == 1:
        raise GlottaError(problems[0])
    if problems:
        lines = "\n".join(f"  {line}" for line in problems)
        raise GlottaError(f"{origin}: {len(problems)} problems, fix them all:\n{lines}")


def validate_recipe(
    recipe: Recipe, run_dir: Path | None = None, stages: Iterable[str] = STAGES
) -> None:
    raise_problems(recipe_problems(recipe, run_dir, stages))


def check_model_folder(model: str, tokenizer: str | None = None) -> None:
    """A --model argument: an exported folder or a checkpoint, else a clear reason why not.

    'owner/name' and 'name' that are not local folders are left to the hub loader.
    """
    path = Path(os.path.expanduser(model))
    if not path.exists() and (path.parent / "recipe.toml").is_file():
        raise GlottaError(f"--model {model}: no such folder; run `glotta export` first")
    if not path.exists():
        if _looks_local(model) or not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", model):
            raise GlottaError(f"--model {model}: no such folder")
        return
    if not path.is_dir():
        raise GlottaError(f"--model {model}: is a file, not a model folder")
    if not (path / "config.json").is_file():
        if (path / "recipe.toml").is_file() or (path / "train").is_dir():
            hint = f"a run folder, not a model: pass {path / 'export'} (run `glotta export` first)"
        else:
            hint = "not a model folder (no config.json): run `glotta export` first, or pass an "
            hint += "exported folder or a checkpoint folder"
        raise GlottaError(f"--model {model}: {hint}")
    if tokenizer:
        tok = Path(os.path.expanduser(tokenizer))
        if not (tok / "tokenizer.json").is_file():
            raise GlottaError(f"--tokenizer {tokenizer}: no tokenizer.json there (no such folder)"
                              if not tok.exists() else
                              f"--tokenizer {tokenizer}: the folder has no tokenizer.json")  # fmt: skip
    elif not (path / "tokenizer.json").is_file():
        raise GlottaError(
            f"--model {model}: the folder has no tokenizer.json; pass --tokenizer DIR (a "
            "checkpoint's tokenizer is in RUN_DIR/tokenizer)"
        )
