"""NER: column reader, strict entity spans and scores against seqeval, subword alignment, and a
real fine-tune of a tiny BERT on hironsancorpus (gold Japanese NER) through the command line."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import random
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from glotta.config import NerConfig
from glotta.errors import GlottaError
from glotta.evaluate.ner import (
    IGNORE,
    align_labels,
    encode_sentences,
    load_fast_tokenizer,
    run_ner,
    summarize,
)
from glotta.evaluate.ner_data import (
    SCHEMES,
    check_tags,
    detect_scheme,
    entity_spans,
    load_ner_data,
    ner_scores,
    read_conll,
)
from glotta.recipe import load_recipe

seqeval = pytest.importorskip("seqeval")
from seqeval.metrics import classification_report, f1_score  # noqa: E402
from seqeval.scheme import BILOU, IOB1, IOB2, IOBES, Entities  # noqa: E402

HIRONSAN = "pkg://hironsan/corpus/iob_sents.txt"
SEQEVAL_SCHEME = {"IOB1": IOB1, "IOB2": IOB2, "BIOES": IOBES, "BILOU": BILOU}
PREFIXES = {"IOB1": "BIO", "IOB2": "BIO", "BIOES": "BIOES", "BILOU": "BILOU"}


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Two cores shared with other processes: one torch thread is many times faster here."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def needs_hironsan():
    if importlib.util.find_spec("hironsan") is None:
        pytest.skip("hironsancorpus is not installed (pip install -e .[dev])")


# ---------------------------------------------------------------------------------------------
# Reading column files


def test_reader_columns_docstart_blank_lines_and_negative_index(tmp_path):
    path = write(
        tmp_path / "a.conll",
        "-DOCSTART- -X- O O\n\n"
        "EU NNP B-NP B-ORG\nrejects VBZ B-VP O\nGerman JJ B-NP B-MISC\n\n\n"
        "Peter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n",
    )
    sentences = read_conll(path, token_column=0, tag_column=-1)
    assert [s.words for s in sentences] == [["EU", "rejects", "German"], ["Peter", "Blackburn"]]
    assert [s.tags for s in sentences] == [["B-ORG", "O", "B-MISC"], ["B-PER", "I-PER"]]
    assert [s.line for s in sentences] == [3, 8]
    chunks = read_conll(path, token_column=1, tag_column=2)  # any columns, e.g. POS + chunk
    assert chunks[0].words == ["NNP", "VBZ", "JJ"] and chunks[0].tags == ["B-NP", "B-VP", "B-NP"]
    assert read_conll(path, token_column=-4, tag_column=3)[1].tags == ["B-PER", "I-PER"]


def test_reader_tab_separator_keeps_spaces_inside_a_column(tmp_path):
    path = write(tmp_path / "t.tsv", "New York\tB-LOC\nis\tO\n\nok\tO\n")
    sentences = read_conll(path, separator="tab")
    assert sentences[0].words == ["New York", "is"]
    assert read_conll(path)[0].words == ["New", "is"]  # whitespace splits "New York"
    with pytest.raises(GlottaError, match=r"t\.tsv:1: 2 column"):
        read_conll(path, tag_column=2, separator="tab")


def test_reader_errors_name_file_line_and_the_setting(tmp_path):
    path = write(tmp_path / "bad.conll", "a X B-PER\nb X I-PER\nc\n")
    with pytest.raises(GlottaError, match=r"bad\.conll:3: 1 column.*ner\.tag_column"):
        read_conll(path, tag_column=2)
    with pytest.raises(GlottaError, match="does not exist"):
        read_conll(tmp_path / "missing.conll")
    with pytest.raises(GlottaError, match="holds no sentences"):
        read_conll(write(tmp_path / "empty.conll", "\n\n"))
    with pytest.raises(GlottaError, match="not installed"):
        read_conll("pkg://no_such_package_xyz/data.txt")
    # A tag the scheme does not use, reported at its line (e.g. a wrong tag column).
    sentences = read_conll(write(tmp_path / "s.conll", "x O\n\ny B-PER\nz E-PER\n"))
    with pytest.raises(GlottaError, match=r"s\.conll:4: tag 'E-PER'.*IOB2.*ner\.scheme"):
        check_tags(sentences, "IOB2")
    check_tags(sentences, "BIOES")
    pos = read_conll(write(tmp_path / "pos.conll", "x NN O\n"), tag_column=1)
    with pytest.raises(GlottaError, match=r"pos\.conll:1: tag 'NN' is neither"):
        check_tags(pos, "IOB2")


def test_hironsancorpus_reads_as_gold_iob2():
    needs_hironsan()
    sentences = read_conll(HIRONSAN)
    assert len(sentences) == 500
    assert sum(len(s.words) for s in sentences) == 15520
    check_tags(sentences, "IOB2")
    assert detect_scheme([s.tags for s in sentences]) == "IOB2"
    assert sum(len(entity_spans(s.tags, "IOB2")) for s in sentences) == 1282
    assert sentences[0].words[:2] == ["2005", "年"] and sentences[0].tags[:2] == ["B-DAT", "I-DAT"]


def test_test_sentences_hold_out_the_tail_of_the_training_file(tmp_path):
    path = write(tmp_path / "d.conll", "".join(f"w{i} B-X\n\n" for i in range(10)))
    train, test, scheme = load_ner_data(NerConfig(train_file=str(path), test_sentences=3))
    assert [s.words[0] for s in test] == ["w7", "w8", "w9"] and len(train) == 7
    assert scheme == "IOB2"
    with pytest.raises(GlottaError, match="not both"):
        load_ner_data(NerConfig(train_file=str(path), test_file=str(path), test_sentences=3))
    with pytest.raises(GlottaError, match="no NER test set"):
        load_ner_data(NerConfig(train_file=str(path)))
    with pytest.raises(GlottaError, match="choose 1..9"):
        load_ner_data(NerConfig(train_file=str(path), test_sentences=10))
    with pytest.raises(GlottaError, match="--train FILE"):
        load_ner_data(NerConfig())


def test_recipe_accepts_a_ner_table(tmp_path):
    recipe_file = write(
        tmp_path / "r.toml",
        '[ner]\ntrain_file = "pkg://hironsan/corpus/iob_sents.txt"\ntest_sentences = 50\n'
        "seeds = [1, 2]\n",
    )
    recipe = load_recipe(str(recipe_file), ["ner.scheme=BIOES"])
    assert recipe.ner.test_sentences == 50 and recipe.ner.seeds == [1, 2]
    assert recipe.ner.scheme == "BIOES"
    with pytest.raises(GlottaError, match="not one of"):
        load_recipe(str(recipe_file), ["ner.scheme=IOE2"])


# ---------------------------------------------------------------------------------------------
# Schemes and entity spans


@pytest.mark.parametrize(
    "scheme, tags, spans",
    [
        ("IOB2", ["B-PER", "I-PER", "O", "B-LOC"], [("PER", 0, 2), ("LOC", 3, 4)]),
        ("IOB2", ["O", "I-PER", "I-PER", "B-PER", "B-PER"], [("PER", 3, 4), ("PER", 4, 5)]),
        ("IOB2", ["B-PER", "I-LOC", "I-LOC"], [("PER", 0, 1)]),  # type change ends it
        (
            "IOB1",
            ["I-PER", "I-PER", "B-PER", "O", "I-LOC"],
            [("PER", 0, 2), ("PER", 2, 3), ("LOC", 4, 5)],
        ),
        ("IOB1", ["I-PER", "I-LOC"], [("PER", 0, 1), ("LOC", 1, 2)]),
        ("BIOES", ["S-PER", "B-LOC", "I-LOC", "E-LOC", "O"], [("PER", 0, 1), ("LOC", 1, 4)]),
        ("BIOES", ["B-LOC", "I-LOC", "O", "B-PER", "E-PER"], [("PER", 3, 5)]),  # unclosed B
        ("BIOES", ["I-LOC", "E-LOC", "B-ORG", "E-LOC"], []),  # no start / type change
        ("BILOU", ["U-PER", "B-LOC", "L-LOC", "B-ORG"], [("PER", 0, 1), ("LOC", 1, 3)]),
    ],
)
def test_entity_spans_by_hand(scheme, tags, spans):
    assert entity_spans(tags, scheme) == spans


def test_detect_scheme():
    assert detect_scheme([["B-X", "I-X", "O"]]) == "IOB2"
    assert detect_scheme([["O", "I-X", "I-X", "B-X", "O", "I-Y"]]) == "IOB1"
    assert detect_scheme([["O", "I-X", "O", "B-X", "O", "B-Y"]]) == "IOB2"  # one slip
    assert detect_scheme([["S-X", "O", "B-Y", "E-Y"]]) == "BIOES"
    assert detect_scheme([["U-X", "B-Y", "L-Y"]]) == "BILOU"
    with pytest.raises(GlottaError, match="mix"):
        detect_scheme([["U-X", "S-Y"]])


def random_tags(rng: random.Random, scheme: str, types: list[str], length: int) -> list[str]:
    out = []
    for _ in range(length):
        prefix = rng.choice(PREFIXES[scheme] + "OO")
        out.append("O" if prefix == "O" else f"{prefix}-{rng.choice(types)}")
    return out


def assert_same_as_seqeval(gold, pred, scheme):
    mine = ner_scores(gold, pred, scheme)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # seqeval warns about undefined (0/0) scores
        ref = classification_report(
            gold, pred, mode="strict", scheme=SEQEVAL_SCHEME[scheme], output_dict=True
        )
        micro = f1_score(gold, pred, mode="strict", scheme=SEQEVAL_SCHEME[scheme], average="micro")
        macro = f1_score(gold, pred, mode="strict", scheme=SEQEVAL_SCHEME[scheme], average="macro")

    def same(a, b):
        return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-12, abs=1e-12)

    assert sorted(mine["per_type"]) == sorted(k for k in ref if not k.endswith(" avg"))
    names = {"precision": "precision", "recall": "recall", "f1": "f1-score", "support": "support"}
    for kind, row in mine["per_type"].items():
        for key, ref_key in names.items():
            assert same(row[key], ref[kind][ref_key]), (kind, key, gold, pred)
    for average in ("micro", "macro", "weighted"):
        for key, ref_key in names.items():
            assert same(mine[average][key], ref[f"{average} avg"][ref_key]), (average, key)
    assert same(mine["micro"]["f1"], micro) and same(mine["macro"]["f1"], macro)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_spans_and_scores_equal_seqeval_strict_on_random_sequences(scheme):
    """Random tag sequences, most of them invalid (I- after O, type changes, unclosed B-)."""
    rng = random.Random(f"ner-{scheme}")
    for _ in range(400):
        types = rng.sample(["PER", "LOC", "ORG", "MISC"], rng.randint(1, 3))
        gold = [
            random_tags(rng, scheme, types, rng.randint(0, 9)) for _ in range(rng.randint(1, 6))
        ]
        pred = [
            random_tags(rng, scheme, types, len(g)) if rng.random() < 0.7 else list(g) for g in gold
        ]
        for tags in gold:
            ours = entity_spans(tags, scheme)
            theirs = Entities([tags], SEQEVAL_SCHEME[scheme]).entities[0]
            assert ours == [(e.tag, e.start, e.end) for e in theirs], tags
        assert_same_as_seqeval(gold, pred, scheme)


@pytest.mark.parametrize(
    "scheme, gold, pred",
    [
        ("IOB2", [["B-PER", "I-PER", "O"], ["B-LOC"]], [["B-PER", "I-PER", "O"], ["O"]]),
        ("IOB2", [["O", "I-PER", "B-LOC"]], [["B-PER", "I-PER", "B-LOC"]]),  # I- after O
        ("IOB2", [["B-PER", "I-PER"]], [["B-PER", "I-LOC"]]),  # type change inside
        ("IOB2", [["O", "O"]], [["B-ORG", "O"]]),  # a type only predicted counts in macro
        ("IOB2", [["O"]], [["O"]]),  # nothing at all: micro 0, macro NaN as in seqeval
        ("IOB1", [["I-PER", "B-PER", "O"]], [["I-PER", "I-PER", "O"]]),
        ("BIOES", [["B-PER", "E-PER", "S-LOC"]], [["B-PER", "I-PER", "S-LOC"]]),
        ("BILOU", [["B-PER", "L-PER", "U-LOC"]], [["U-PER", "L-PER", "U-LOC"]]),
    ],
)
def test_scores_equal_seqeval_strict_by_hand(scheme, gold, pred):
    assert_same_as_seqeval(gold, pred, scheme)


def test_tags_a_scheme_does_not_allow_are_errors():
    with pytest.raises(ValueError, match="not allowed in IOB2"):
        entity_spans(["B-PER", "E-PER"], "IOB2")
    with pytest.raises(ValueError, match="neither"):
        entity_spans(["PER"], "IOB2")
    with pytest.raises(ValueError, match="2 gold tags but 1"):
        ner_scores([["O", "O"]], [["O"]], "IOB2")


# ---------------------------------------------------------------------------------------------
# Subwords


def test_align_labels_first_subword_only():
    labels, first = align_labels([None, 0, 0, 1, 2, 2, 2, None], [5, 6, 7])
    assert labels == [IGNORE, 5, IGNORE, 6, 7, IGNORE, IGNORE, IGNORE]
    assert first == [1, 3, 4]
    labels, first = align_labels([None, 0, 1, None], [5, 6, 7])  # word 2 was cut off
    assert labels == [IGNORE, 5, 6, IGNORE] and first == [1, 2, -1]


def test_summary_over_seeds_is_mean_and_sample_std_by_hand():
    """Two seeds' scores (from ner_scores on hand-made tags): means, sample standard deviation
    sqrt(sum((x - mean)^2) / (n - 1)), a type only one seed predicted counts as 0 in the other."""
    gold = [["B-PER", "I-PER", "O", "B-LOC"]]
    runs = [
        {"scores": ner_scores(gold, [["B-PER", "I-PER", "O", "B-LOC"]], "IOB2")},  # all right
        {"scores": ner_scores(gold, [["B-PER", "O", "B-ORG", "B-LOC"]], "IOB2")},  # LOC only
    ]
    summary = summarize(runs)
    # seed 2: PER p=r=0, LOC p=r=1, ORG predicted once (p=r=0): micro p=1/3, r=1/2, f1=0.4
    assert summary["micro_f1"]["values"] == [1.0, pytest.approx(0.4)]
    assert summary["micro_f1"]["mean"] == pytest.approx(0.7)
    assert summary["micro_f1"]["std"] == pytest.approx(math.sqrt(2 * 0.3**2))
    assert summary["micro_precision"]["mean"] == pytest.approx((1 + 1 / 3) / 2)
    assert summary["micro_recall"]["mean"] == pytest.approx(0.75)
    # macro over the types each seed saw: seed 1 (PER, LOC) 1.0, seed 2 (LOC, ORG, PER) 1/3
    assert summary["macro_f1"]["values"] == [1.0, pytest.approx(1 / 3)]
    assert summary["macro_precision"]["mean"] == pytest.approx(2 / 3)
    assert summary["macro_recall"]["std"] == pytest.approx(math.sqrt(2 * (1 / 3) ** 2))
    assert summary["per_type"] == {
        "LOC": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "f1_std": 0.0, "support": 1},
        "ORG": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "f1_std": 0.0, "support": 0},
        "PER": {
            "precision": 0.5,
            "recall": 0.5,
            "f1": 0.5,
            "f1_std": pytest.approx(math.sqrt(0.5)),
            "support": 1,
        },
    }
    one = summarize(runs[:1])
    assert one["micro_f1"] == {"mean": 1.0, "std": 0.0, "values": [1.0]}


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    needs_hironsan()
    """A 2-layer, 64-wide untrained BertModel (no head) and a WordPiece tokenizer trained on the
    450 training sentences (the 50 test sentences stay unseen), as one folder on disk."""
    from benchmarks.ner_hironsan import build_tiny_bert

    train = read_conll(HIRONSAN)[:450]
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), train, layers=2, hidden=64)


def test_labels_align_to_first_subwords_with_a_real_tokenizer(tiny_bert):
    tokenizer = load_fast_tokenizer(tiny_bert)
    sentences = read_conll(HIRONSAN)[:20]
    label2id = {t: i for i, t in enumerate(sorted({t for s in sentences for t in s.tags}))}
    data = encode_sentences(tokenizer, sentences, label2id, max_length=256)
    assert data.truncated_sentences == 0 and data.words_cut == 0
    for sentence, ids, labels, first in zip(
        sentences, data.input_ids, data.labels, data.first_subword, strict=True
    ):
        tokens = tokenizer.convert_ids_to_tokens(ids)
        assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
        assert labels[0] == labels[-1] == IGNORE
        assert [labels[p] for p in first] == [label2id[t] for t in sentence.tags]
        assert sum(label != IGNORE for label in labels) == len(sentence.words)
        for word, position in zip(sentence.words, first, strict=True):
            assert (
                word.startswith(tokens[position].removeprefix("##")) or tokens[position] == "[UNK]"
            )
            # the word's other pieces are continuation pieces, all ignored by the loss
            rest = position + 1
            while rest < len(tokens) and tokens[rest].startswith("##"):
                assert labels[rest] == IGNORE
                rest += 1
    # Truncation is counted: at 12 subwords most sentences lose words, which then get no label.
    short = encode_sentences(tokenizer, sentences, label2id, max_length=12)
    assert short.truncated_sentences > 10 and short.words_cut > 100
    assert all(len(ids) <= 12 for ids in short.input_ids)
    assert all(-1 in first for first in short.first_subword if len(first) > 11)


# ---------------------------------------------------------------------------------------------
# Fine-tuning


def test_fine_tune_is_deterministic_per_seed_and_scores_equal_seqeval(
    tiny_bert, tmp_path, monkeypatch
):
    from glotta.evaluate import ner as ner_module

    subset = tmp_path / "subset.conll"
    sentences = read_conll(HIRONSAN)[:120]
    write(
        subset,
        "\n".join(
            "".join(f"{w}\t{t}\n" for w, t in zip(s.words, s.tags, strict=True)) for s in sentences
        ),
    )
    cfg = NerConfig(
        train_file=str(subset),
        test_sentences=20,
        epochs=2,
        learning_rate=3e-3,
        seeds=[0, 0, 1],
        max_length=48,
    )
    captured = []
    original = ner_module.ner_scores

    def spy(gold, predicted, scheme):
        captured.append((gold, predicted))
        return original(gold, predicted, scheme)

    monkeypatch.setattr(ner_module, "ner_scores", spy)
    messages = []
    result = run_ner(cfg, tiny_bert, log=messages.append)
    runs = result["seeds"]
    assert runs[0]["scores"] == runs[1]["scores"]  # same seed, same model
    assert runs[0]["final_train_loss"] == runs[1]["final_train_loss"]
    assert runs[0]["final_train_loss"] != runs[2]["final_train_loss"]
    micro = [r["scores"]["micro"]["f1"] for r in runs]
    assert result["summary"]["micro_f1"]["mean"] == pytest.approx(sum(micro) / 3)
    assert result["summary"]["micro_f1"]["values"] == micro
    assert result["train_sentences"] == 100 and result["test_sentences"] == 20
    # max_length=48 truncates some sentences: counted, and said so.
    assert result["truncation"]["train_sentences_truncated"] > 0
    assert any("truncated" in m for m in messages)
    for gold, predicted in captured:  # the real predictions, scored by seqeval too
        assert_same_as_seqeval(gold, predicted, "IOB2")


@pytest.fixture(scope="module")
def cli_result(tiny_bert, tmp_path_factory) -> tuple[dict, Path, subprocess.CompletedProcess]:
    """`glotta eval ner --json` on hironsancorpus (450/50), the model inside a run directory."""
    import shutil

    run_dir = tmp_path_factory.mktemp("run")
    model = run_dir / "export"
    shutil.copytree(tiny_bert, model)
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "OMP_NUM_THREADS": "1"}
    args = [
        *("eval", "ner", "--run-dir", str(run_dir), "--model", str(model)),
        *("--train", HIRONSAN, "--test-sentences", "50", "--seeds", "0"),
        *("--epochs", "8", "--learning-rate", "1e-3", "--json"),
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "glotta", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), run_dir, proc


def test_cli_fine_tunes_a_tiny_bert_on_hironsancorpus_well_above_all_o(cli_result):
    result, run_dir, proc = cli_result
    assert result["train_sentences"] == 450 and result["test_sentences"] == 50
    assert result["test_entities"] == 100 and result["scheme"] == "IOB2"
    # An all-"O" tagger scores 0; a 2-layer, 64-wide BERT from scratch gets about 0.35.
    assert result["summary"]["micro_f1"]["mean"] > 0.15
    assert result["summary"]["macro_f1"]["mean"] > 0.05
    assert {"DAT", "LOC", "ORG"} <= set(result["summary"]["per_type"])
    assert result["truncation"]["test_sentences_truncated"] == 0
    assert "ner: seed 0: micro F1" in proc.stderr
    saved = json.loads((run_dir / "eval" / "ner.json").read_text(encoding="utf-8"))
    assert saved["summary"] == result["summary"]


def test_model_card_gets_a_ner_section(cli_result, tmp_path):
    from glotta.config import RecipeInfo
    from glotta.export.card import render_card

    _, run_dir, _ = cli_result
    missing = tmp_path / "missing.json"
    files = dict.fromkeys(
        ["corpus_stats", "tokenizer_stats", "train_config", "train_summary", "eval_results"],
        missing,
    )
    card = render_card(
        {**files, "ner_results": run_dir / "eval" / "ner.json"}, RecipeInfo(), [], "", ""
    )
    assert "### Named-entity recognition" in card and "| **micro** |" in card
    assert "Named-entity" not in render_card(files, RecipeInfo(), [], "", "")


def test_cli_errors_are_one_line(tmp_path):
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    proc = subprocess.run(
        [sys.executable, "-m", "glotta", "eval", "ner", "--model", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "no Hugging Face model folder" in proc.stderr
