"""An untrained tiny BERT for the hironsancorpus NER demonstration (see docs/ner.md).

    python -m benchmarks.ner_hironsan --out runs/ner-tiny-bert --layers 4 --hidden 128
    glotta eval ner --model runs/ner-tiny-bert --train pkg://hironsan/corpus/iob_sents.txt \\
        --test-sentences 50 --epochs 20 --learning-rate 1e-3 --seeds 0 1 2

Writes a Hugging Face folder: a WordPiece tokenizer trained on the surface forms of the first 450
sentences of ``hironsan/corpus/iob_sents.txt`` (the 50 test sentences stay unseen) and a randomly
initialised ``BertModel`` without any head, the kind of checkpoint ``glotta eval ner`` adds a
token-classification head to. Nothing is pretrained: the NER fine-tune is all the training there is.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HIRONSAN = "pkg://hironsan/corpus/iob_sents.txt"
TRAIN_SENTENCES = 450  # the package's own split: 450 train / 50 test


def build_tiny_bert(
    folder: Path,
    sentences: list,
    layers: int = 2,
    hidden: int = 64,
    vocab_size: int = 1000,
    seed: int = 0,
) -> Path:
    """Save a WordPiece tokenizer trained on ``sentences`` (glotta ``Sentence`` objects) and an
    untrained ``BertModel`` (``layers`` x ``hidden``, heads of 32 dimensions) into ``folder``."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=specials, show_progress=False
    )
    tokenizer.train_from_iterator([" ".join(s.words) for s in sentences], trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        special_tokens=[
            ("[CLS]", tokenizer.token_to_id("[CLS]")),
            ("[SEP]", tokenizer.token_to_id("[SEP]")),
        ],
    )
    PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    ).save_pretrained(folder)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 32),
        intermediate_size=4 * hidden,
        max_position_embeddings=256,
    )
    BertModel(config).save_pretrained(folder)
    return folder


def main(argv: list[str] | None = None) -> None:
    from benchmarks.common import CACHE_DIR, emit_json_line, parse_with_smoke
    from glotta.evaluate.ner_data import read_conll

    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.ner_hironsan", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("runs/ner-tiny-bert"),
        help="Folder of the model and tokenizer (default: runs/ner-tiny-bert).",
    )
    parser.add_argument("--layers", type=int, default=4, help="BERT layers (default: 4).")
    parser.add_argument("--hidden", type=int, default=128, help="Hidden width (default: 128).")
    parser.add_argument(
        "--vocab-size", type=int, default=2000, help="WordPiece vocabulary (default: 2000)."
    )
    parser.add_argument("--seed", type=int, default=0, help="Initialisation seed (default: 0).")
    smoke = {"out": CACHE_DIR / "smoke-ner-tiny-bert", "layers": 1, "hidden": 32, "vocab_size": 300}
    args = parse_with_smoke(parser, argv, smoke)
    train = read_conll(HIRONSAN)[:TRAIN_SENTENCES]
    build_tiny_bert(args.out, train, args.layers, args.hidden, args.vocab_size, args.seed)
    print(args.out)
    emit_json_line(
        {
            "bench": "ner_hironsan",
            "out": str(args.out),
            "layers": args.layers,
            "hidden": args.hidden,
            "vocab_size": args.vocab_size,
            "train_sentences": len(train),
        }
    )


if __name__ == "__main__":
    main()
