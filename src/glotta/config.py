"""Recipes: one frozen dataclass per stage, loaded from TOML and overridden with ``--set``.

A recipe is a TOML file with one table per stage (``[corpus]``, ``[tokenizer]``, ...). Every key is
checked against the stage's dataclass: unknown keys and wrong types are errors that name the key and
the file. Each field carries a ``help`` text; the CLI turns those into ``--help`` for every option.

Each stage receives only its own section (torchtitan dropped a global job config because it
"leaked everywhere"); the few cross-stage facts (vocabulary size, block size) travel through the
files a stage writes into the run directory.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from glotta.errors import GlottaError


def opt(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:
    """A dataclass field with a help text (shown by ``--help``) and optional allowed values."""
    metadata = {"help": help, "choices": choices}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class RecipeInfo:
    """What the recipe is about; used by the model card and as the default run directory name."""

    name: str = opt("unnamed", "Short name of the recipe; default run directory is runs/NAME.")
    description: str = opt("", "One sentence describing the model, used in the model card.")
    language: list[str] = opt([], "ISO 639-1 language codes of the corpus (model card metadata).")
    license: str = opt("other", "License of the trained model (model card metadata).")
    datasets: list[str] = opt([], "Dataset names for the model card metadata.")
    widget_text: str = opt("", "Example prompt for the model card widget and default generation.")
    citation: str = opt(
        "", "Where the recipe's hyperparameters come from (cited in the model card)."
    )


@dataclass(frozen=True)
class CorpusConfig:
    """Stage 1: read raw text, clean it, deduplicate, split into train/valid/test."""

    inputs: list[str] = opt(
        [],
        "Files, directories or globs to read; 'pkg://PACKAGE/sub/path' resolves inside an "
        "installed Python package. .gz/.bz2/.zst files are decompressed on the fly.",
    )
    format: str = opt(
        "auto",
        "Input format; 'auto' picks by file extension (.txt, .jsonl/.json, .parquet, .tsv, "
        ".xml = MediaWiki XML dump such as *-pages-articles*.xml.bz2). 'cirrus' = Wikipedia "
        "CirrusSearch JSON dump (*-cirrussearch-content.json.gz).",
        ("auto", "txt", "jsonl", "parquet", "tsv", "hf", "wikipedia", "cirrus"),
    )
    txt_documents: str = opt(
        "paragraphs",
        "How plain text splits into documents: at blank lines, one per line, or one per file.",
        ("paragraphs", "lines", "file"),
    )
    text_fields: list[str] = opt(
        ["text"], "JSONL/Parquet/HF fields holding the text; several are joined with a newline."
    )
    tsv_columns: list[int] = opt([0], "TSV columns (0-based) concatenated into the document text.")
    markup: str = opt(
        "none",
        "Markup to convert: 'wiki40b' turns _START_ARTICLE_/_START_SECTION_/_START_PARAGRAPH_/"
        "_NEWLINE_ markers into title, section and paragraph breaks.",
        ("none", "wiki40b"),
    )
    hf_dataset: str = opt(
        "", "Hugging Face dataset to stream instead of local files (needs network), e.g. wiki40b."
    )
    hf_config: str = opt("", "Configuration of the Hugging Face dataset, e.g. 'sv'.")
    hf_splits: list[str] = opt(["train"], "Splits of the Hugging Face dataset to read.")
    normalization: str = opt(
        "NFC", "Unicode normalization applied to every document.", ("NFC", "NFKC", "none")
    )
    min_chars: int = opt(20, "Drop documents shorter than this many characters after cleaning.")
    max_chars: int = opt(1_000_000, "Drop documents longer than this (0 = no limit).")
    max_not_text_fraction: float = opt(
        0.1,
        "Drop documents (reason not_text) whose characters are more than this share U+FFFD "
        "(invalid UTF-8) or control characters: binary data read as text (1 = keep all).",
    )
    dedup: bool = opt(True, "Drop exact duplicates (compared after normalization).")
    valid_fraction: float = opt(0.005, "Fraction of documents assigned to the valid split.")
    test_fraction: float = opt(0.005, "Fraction of documents assigned to the test split.")
    split_salt: str = opt("glotta", "Salt of the content hash that assigns documents to splits.")
    max_documents: int = opt(0, "Stop after this many input documents (0 = read everything).")
    # Language identification (py3langid's model, shipped in its wheel).
    languages: list[str] = opt(
        [], "Keep only text in these languages (ISO 639-1, e.g. ['sv']); [] = no language filter."
    )
    language_threshold: float = opt(
        0.5, "Minimum confidence (0-1) of the language identifier for text to count as in-language."
    )
    language_mode: str = opt(
        "document",
        "'document' keeps or drops whole documents; 'lines' removes the lines in other languages "
        "(for documents that mix languages).",
        ("document", "lines"),
    )
    # Quality filters (Gopher's rules, Rae et al. 2021; C4's boilerplate lines). 0 = rule off.
    quality_filter: bool = opt(False, "Apply the quality_* rules and remove boilerplate lines.")
    quality_max_duplicate_line_fraction: float = opt(
        0.30, "Drop documents whose non-blank lines are repeated lines beyond this fraction."
    )
    quality_max_duplicate_line_char_fraction: float = opt(
        0.20, "Drop documents whose characters in repeated lines exceed this fraction."
    )
    quality_max_top_ngram_char_fraction: float = opt(
        0.20,
        "Drop documents whose most frequent word 2-gram covers more than this fraction of the "
        "characters (3-grams: 0.02 less, 4-grams: 0.04 less).",
    )
    quality_max_duplicate_ngram_char_fraction: float = opt(
        0.15,
        "Drop documents whose repeated word 5-grams cover more than this fraction of the "
        "characters (0.01 less per extra word, up to 10-grams).",
    )
    quality_max_symbol_word_ratio: float = opt(
        0.10, "Drop documents with more '#' and ellipses per word than this."
    )
    quality_max_digit_fraction: float = opt(
        0.30, "Drop documents whose non-space characters are digits beyond this fraction."
    )
    quality_min_letter_word_fraction: float = opt(
        0.80, "Drop documents where fewer words than this fraction contain a letter."
    )
    quality_max_bullet_line_fraction: float = opt(
        0.90, "Drop documents where more lines than this fraction start with a bullet."
    )
    quality_max_ellipsis_line_fraction: float = opt(
        0.30, "Drop documents where more lines than this fraction end with an ellipsis."
    )
    quality_min_mean_word_length: float = opt(
        3.0, "Drop space-separated documents whose mean word length is below this."
    )
    quality_max_mean_word_length: float = opt(
        10.0, "Drop space-separated documents whose mean word length is above this."
    )
    boilerplate_patterns: list[str] = opt(
        [
            r"\bcookies?\b",
            r"\bjavascript\b",
            r"terms of (use|service)",
            r"privacy policy",
            r"all rights reserved",
            r"lorem ipsum",
        ],
        "With quality_filter: lines matching one of these regular expressions (case-insensitive) "
        "are removed (C4's boilerplate lines).",
    )
    scrub_pii: bool = opt(
        False, "Replace e-mail addresses, phone numbers and IP addresses by <email>/<phone>/<ip>."
    )
    # Near-duplicate removal (MinHash + LSH, bounded memory).
    near_dedup: bool = opt(False, "Drop near-duplicates (MinHash LSH), keeping the first seen.")
    near_dedup_threshold: float = opt(
        0.8, "Jaccard similarity of shingle sets above which documents count as near-duplicates."
    )
    near_dedup_ngram: int = opt(
        5, "Shingle size: words for spaced scripts, characters for Japanese/Chinese/Thai."
    )
    near_dedup_permutations: int = opt(128, "MinHash permutations (signature length).")
    near_dedup_memory_mb: float = opt(
        256.0,
        "Fixed memory of the LSH index (a Bloom filter); the estimated false-drop rate is reported.",
    )
    dropped_samples: int = opt(
        20, "Write up to this many dropped documents per reason to dropped_samples.jsonl."
    )
    # Parallelism and scale-out.
    workers: int = opt(
        0,
        "Processes that clean and filter documents (0 = all cores when a filter or wikitext "
        "conversion is on, else 1: plain cleaning is faster in the reading process).",
    )
    executor: str = opt(
        "local",
        "'local' = this machine; 'datatrove-local', 'slurm', 'ray' = run the cleaning as sharded "
        "datatrove tasks (pip install 'glotta[scale]'); finished tasks are skipped on a re-run.",
        ("local", "datatrove-local", "slurm", "ray"),
    )
    tasks: int = opt(0, "datatrove executors: number of tasks (0 = one per input file).")
    slurm_partition: str = opt("", "executor = 'slurm': partition to submit to.")
    slurm_time: str = opt("24:00:00", "executor = 'slurm': time limit per task.")


@dataclass(frozen=True)
class TokenizerConfig:
    """Stage 2: train a tokenizer on the train split."""

    kind: str = opt(
        "bpe",
        "'bpe' = byte-level BPE (GPT-2 style); 'unigram' = SentencePiece Unigram with byte fallback; "
        "'wordpiece' = BERT's WordPiece with [PAD] [UNK] [CLS] [SEP] [MASK] and '##' continuations; "
        "'roberta-bpe' = byte-level BPE with RoBERTa's <s> <pad> </s> <unk> <mask>. The two masked-LM "
        "kinds wrap every encoded text as [CLS] ... [SEP] / <s> ... </s>, use [SEP] / </s> between "
        "documents and ignore eos_token, unk_token and pad_token.",
        ("bpe", "unigram", "wordpiece", "roberta-bpe"),
    )
    pretrained: str = opt(
        "",
        "Use this existing fast tokenizer (a folder with tokenizer.json, or a hub id) instead of "
        "training one; needed to continue pretraining a checkpoint (model.init_from) with its own "
        "vocabulary. kind and vocab_size are then ignored.",
    )
    trim_vocab: bool = opt(
        False,
        "With a WordPiece tokenizer.pretrained (mBERT, MiniLM): keep only the tokens the train "
        "split uses at least trim_min_count times, every special token and every single "
        "character (so unseen words still split into pieces), renumbered in order; a distill "
        "teacher is trimmed the same way when it is loaded (vocab_trim.json records the kept "
        "ids). mBERT's 119,547 tokens shrink to what one language needs.",
    )
    trim_min_count: int = opt(1, "With trim_vocab: keep tokens used at least this often.")
    vocab_size: int = opt(32000, "Vocabulary size, special and byte tokens included.")
    min_frequency: int = opt(2, "BPE: minimum pair frequency for a merge.")
    max_training_texts: int = opt(
        1_000_000,
        "Train on at most this many documents, sampled uniformly (reservoir) from the train split; "
        "caps tokenizer memory (HF tokenizers can run out of memory on large Japanese corpora).",
    )
    eos_token: str = opt("<|endoftext|>", "End-of-document token, inserted between documents.")
    unk_token: str = opt("<unk>", "Unigram: unknown token (never produced with byte fallback).")
    pad_token: str = opt("", "Padding token ('' = reuse the end-of-document token).")
    special_tokens: list[str] = opt([], "Extra special tokens added to the vocabulary.")
    add_dummy_prefix: bool = opt(True, "Unigram: prepend a space marker to every text.")
    byte_fallback: bool = opt(True, "Unigram: encode unseen characters as UTF-8 byte tokens.")
    character_coverage: float = opt(
        0.9995, "Unigram: share of characters covered by the vocabulary (rest via bytes)."
    )
    seed: int = opt(0, "Seed of the training-sample reservoir.")


@dataclass(frozen=True)
class PackConfig:
    """Stage 3: tokenize the splits into binary token shards."""

    threads: int = opt(0, "Tokenizer threads (0 = all cores).")
    batch_documents: int = opt(1000, "Documents tokenized per batch (bounds memory).")


@dataclass(frozen=True)
class ModelConfig:
    """The network: a Hugging Face transformers architecture, by preset or explicit size."""

    arch: str = opt(
        "gpt2",
        "Model family (glotta.models): 'gpt2' (GPT2LMHeadModel) or 'llama' (LlamaForCausalLM: "
        "RMSNorm, SwiGLU, rotary positions, grouped-query attention), both train.objective = "
        "'clm'; 'bert' (BertForMaskedLM) or 'roberta' (RobertaForMaskedLM), both "
        "train.objective = 'mlm'. Families registered by plugins are accepted too.",
    )
    preset: str = opt(
        "tiny",
        "Size preset (layers x hidden width). gpt2: tiny (2x128), small (12x768, 124M), medium "
        "(24x1024, 355M), large (36x1280, 774M), xl (48x1600, 1.5B). llama: tiny (2x128, 4 "
        "heads, 2 key/value heads), smollm2-135m (30x576, 9 heads, 3 key/value heads), "
        "smollm2-360m (32x960). bert/roberta (Turc et al. 2019's BERT sizes; heads = width/64, "
        "feed-forward = 4 x width): tiny (2x128, 4.4M with BERT's 30k vocabulary), mini (4x256, "
        "11M), small (4x512, 29M), medium (8x512, 42M), base (12x768, 110M), large (24x1024, "
        "340M). 'custom' = n_layer/n_embd/n_head set explicitly.",
    )
    n_layer: int = opt(0, "Transformer blocks (0 = from preset).")
    n_embd: int = opt(0, "Hidden width (0 = from preset).")
    n_head: int = opt(0, "Attention heads (0 = from preset).")
    n_kv_head: int = opt(
        0,
        "llama: key/value heads for grouped-query attention; n_head must be a multiple "
        "(0 = from preset, or n_head: plain multi-head attention).",
    )
    n_inner: int = opt(
        0,
        "Feed-forward width (0 = from preset, or the family's default: 4 x n_embd for gpt2 and "
        "bert, 8/3 x n_embd rounded up to a multiple of 32 for llama's SwiGLU).",
    )
    rope_theta: float = opt(
        0.0, "llama: base of the rotary position frequencies (0 = preset's, else 10000)."
    )
    tie_embeddings: bool = opt(
        True, "Share the input embeddings with the output layer (GPT-2, BERT and SmolLM2 do)."
    )
    n_positions: int = opt(0, "Maximum context length (0 = train.block_size).")
    dropout: float = opt(0.0, "Dropout on embeddings, residuals and attention.")
    init_from: str = opt(
        "", "Start from this Hugging Face checkpoint (folder or hub id) instead of random weights."
    )


@dataclass(frozen=True)
class TrainPhase:
    """A later phase of pretraining that continues from the one before (``[[train.phases]]``).

    Zero (or -1 for ``warmup_steps``) keeps the value of ``[train]``. A phase gets a fresh
    optimizer and learning-rate schedule; a ``block_size`` beyond the model's positions extends
    the context (learned position embeddings grow, rotary ones need no new weights; see
    :func:`glotta.models.extend_positions`).
    """

    block_size: int = opt(0, "Tokens per sequence in this phase (0 = as in [train]).")
    max_steps: int = opt(0, "Optimizer steps of this phase (0 = derive from epochs).")
    epochs: float = opt(0.0, "Passes over the train shard in this phase (0 = as in [train]).")
    learning_rate: float = opt(0.0, "Peak learning rate of this phase (0 = as in [train]).")
    warmup_steps: int = opt(-1, "Warmup steps of this phase (-1 = as in [train]).")
    micro_batch_size: int = opt(0, "Sequences per forward pass (0 = as in [train]).")
    global_batch_size: int = opt(0, "Sequences per optimizer step (0 = as in [train]).")
    rope_theta: float = opt(
        0.0,
        "llama: a new RoPE base for this phase (e.g. 500000 for a longer context, as Xiong et "
        "al. 2023 do); 0 = keep the model's.",
    )


@dataclass(frozen=True)
class TrainConfig:
    """Stage 4: pretraining loop."""

    objective: str = opt(
        "clm",
        "'clm' = causal language modelling (next token; model.arch 'gpt2' or 'llama'); 'mlm' = masked "
        "language modelling (BERT/RoBERTa; model.arch 'bert' or 'roberta'): dynamic masking, new "
        "masks for every step, loss over the masked tokens only.",
        ("clm", "mlm"),
    )
    mlm_probability: float = opt(
        0.15,
        "mlm: share of the (non-special) tokens chosen for prediction; of those 80% become the mask "
        "token, 10% a random token and 10% stay unchanged (Devlin et al. 2019, fixed).",
    )
    whole_word_masking: bool = opt(
        False,
        "mlm: choose whole words instead of single tokens (a word = a token that starts a word and "
        "its continuations: no '##' in WordPiece, a leading space marker in byte-level BPE). "
        "Japanese and other unspaced text: a word = a run of tokens in one script (kanji, "
        "hiragana, katakana) between punctuation; at most 10 tokens per word.",
    )
    block_size: int = opt(1024, "Tokens per training sequence.")
    micro_batch_size: int = opt(8, "Sequences per forward pass on one process.")
    gradient_accumulation_steps: int = opt(
        1, "Micro-batches per optimizer step (ignored when global_batch_size is set)."
    )
    global_batch_size: int = opt(
        0,
        "Sequences per optimizer step over all processes (0 = micro x accumulation x processes). "
        "Kept on any hardware by deriving gradient accumulation.",
    )
    max_steps: int = opt(0, "Optimizer steps (0 = derive from epochs).")
    epochs: float = opt(1.0, "Passes over the train shard when max_steps is 0.")
    learning_rate: float = opt(3e-4, "Peak learning rate.")
    min_lr_ratio: float = opt(0.0, "Final learning rate as a fraction of the peak.")
    warmup_steps: int = opt(0, "Linear warmup steps.")
    decay: str = opt("cosine", "Schedule after warmup.", ("cosine", "linear", "constant"))
    weight_decay: float = opt(0.1, "AdamW weight decay (not applied to biases and LayerNorm).")
    adam_beta1: float = opt(0.9, "AdamW beta1.")
    adam_beta2: float = opt(0.95, "AdamW beta2.")
    adam_eps: float = opt(1e-8, "AdamW epsilon.")
    grad_clip: float = opt(1.0, "Clip the global gradient norm to this value (0 = off).")
    precision: str = opt(
        "auto",
        "'bf16' autocast, 'fp32', or 'auto' (bf16 on GPUs that support it, else fp32).",
        ("auto", "bf16", "fp32"),
    )
    compile: bool = opt(False, "torch.compile the model (pays a warm-up; worth it on long runs).")
    fused_loss: bool = opt(
        True,
        "Causal LMs: compute the LM head and cross-entropy chunk by chunk without storing the "
        "(tokens x vocab) logits (same loss and gradients, far less memory; "
        "glotta.train.fused_loss). Off = the plain head and loss.",
    )
    activation_checkpointing: bool = opt(
        False, "Recompute activations in the backward pass: less memory, about 1/3 more compute."
    )
    parallelism: str = opt(
        "ddp",
        "Under torchrun: 'ddp' (a full model copy per process) or 'fsdp' (FSDP2 fully_shard: "
        "parameters, gradients and optimizer state sharded, for models that do not fit).",
        ("ddp", "fsdp"),
    )
    eval_interval: int = opt(200, "Steps between validation-loss measurements (0 = only at end).")
    eval_batches: int = opt(20, "Micro-batches of the valid shard per validation.")
    checkpoint_interval: int = opt(500, "Steps between checkpoints (a final one is always saved).")
    keep_checkpoints: int = opt(
        2, "Keep the newest K checkpoints plus the one with the lowest validation loss."
    )
    log_interval: int = opt(10, "Steps between metric log lines.")
    seed: int = opt(1337, "Seed for initialisation and data order.")
    device: str = opt("auto", "'auto' (cuda if available), 'cpu' or 'cuda'.")
    phases: list[TrainPhase] = opt(
        [],
        "Later phases continuing this one, e.g. a longer context: [[train.phases]] tables with "
        "block_size, max_steps/epochs, learning_rate, warmup_steps, micro/global batch size.",
    )


@dataclass(frozen=True)
class DistillConfig:
    """Stage 4 for a student (`glotta distill`): learn from a frozen teacher as well as the data.

    With a teacher set, `glotta run` distills instead of training. The student's shape comes from
    [model]; its steps, batches, schedule, checkpoints and processes from [train]. A causal LM
    student (train.objective = 'clm') minimises, per predicted token (DistilBERT/DistilGPT2, Sanh
    et al. 2019), alpha_ce * KL(teacher/T || student/T) * T^2 + alpha_clm * cross-entropy
    + alpha_cos * (1 - cos(student hidden state, teacher hidden state)). An encoder student
    (train.objective = 'mlm'; LightMBERT, Jiao et al. 2021, with TinyBERT's losses) minimises,
    per position, alpha_hidden * hidden-state MSE + alpha_attention * attention-score MSE over
    the layers that distill.layer_map pairs.
    """

    teacher: str = opt(
        "",
        "Teacher: a folder or Hugging Face hub id. A causal LM sharing the student's tokenizer "
        "(train.objective = 'clm'), or a BERT-family encoder (train.objective = 'mlm'; with or "
        "without a masked-LM head). '' = no distillation: `glotta run` trains on the data alone.",
    )
    teacher_tokenizer: str = opt(
        "",
        "Folder or hub id of the teacher's tokenizer if the teacher has none ('' = the "
        "teacher's own); its vocabulary must equal the run's tokenizer.",
    )
    alpha_ce: float = opt(
        5.0, "Causal students: weight of the soft-target loss KL(teacher/T || student/T) x T^2."
    )
    alpha_clm: float = opt(0.5, "Causal students: weight of the next-token cross-entropy.")
    alpha_cos: float = opt(
        1.0,
        "Causal students: weight of the cosine loss 1 - cos(student, teacher) on the last hidden "
        "states; a learned linear "
        "projection (trained and checkpointed, not exported) maps the student's width to the "
        "teacher's when they differ.",
    )
    temperature: float = opt(2.0, "Softmax temperature T of the soft-target loss.")
    alpha_hidden: float = opt(
        1.0,
        "Encoder students: weight of the mean squared error between the student's hidden states "
        "(embedding output and every layer) and the teacher's layers that layer_map pairs them "
        "with; through a learned projection (trained, not exported) when the widths differ.",
    )
    alpha_attention: float = opt(
        1.0,
        "Encoder students: weight of the mean squared error between attention scores (before "
        "the softmax, per head) of each student layer and its teacher layer; needs the "
        "teacher's number of heads.",
    )
    layer_map: list[int] = opt(
        [],
        "Encoder students: the teacher layer (0-based) each student layer learns from, in order "
        "([] = TinyBERT's uniform map, e.g. [1, 3, 5, 7, 9, 11] for 6 of 12 layers).",
    )
    student_layers: list[int] = opt(
        [],
        "Teacher layers copied into the student, in order, with the embeddings (and final norm, "
        "pooler, masked-LM head). GPT-2 (DistilGPT2: [0, 2, 4, 7, 9, 11] of 12) needs "
        "model.n_layer = their number and the teacher's width and heads; a BERT-family student "
        "becomes the teacher's architecture with these layers (LightMBERT: the bottom 6, "
        "[0, 1, 2, 3, 4, 5]) and model.dropout, whatever else [model] says. [] = a student of [model]'s shape at random.",
    )
    freeze_embeddings: bool = opt(
        False,
        "Encoder students: do not train the word embeddings (LightMBERT freezes them; the "
        "Swedish distilled mBERT did not).",
    )
    teacher_dtype: str = opt(
        "bf16",
        "Teacher weights and forward pass: 'bf16' where the device computes bf16 natively (else "
        "fp32, with a log line), or 'fp32'.",
        ("bf16", "fp32"),
    )
    freeze_position_embeddings: bool = opt(
        False,
        "Do not train the student's position embeddings (DistilGPT2's --freeze_pos_embs, used "
        "with student_layers so they stay the teacher's).",
    )


@dataclass(frozen=True)
class EvalConfig:
    """Stage 5: held-out perplexity and bits per byte."""

    split: str = opt("test", "Corpus split evaluated by 'glotta run'.", ("test", "valid"))
    stride: int = opt(0, "Sliding-window stride in tokens (0 = half the context).")
    batch_size: int = opt(8, "Windows per forward pass.")
    unigram_baseline: bool = opt(True, "Also report a unigram model fitted on the train shard.")


@dataclass(frozen=True)
class GenerateConfig:
    """Sampling settings for 'glotta generate' and the demo sample."""

    prompt: str = opt("", "Prompt ('' = recipe.widget_text).")
    max_new_tokens: int = opt(60, "Tokens to generate.")
    temperature: float = opt(0.8, "Softmax temperature (0 = greedy).")
    top_k: int = opt(50, "Keep the k most likely tokens (0 = off).")
    top_p: float = opt(
        0.95, "Keep the smallest set of tokens with this much probability (1 = off)."
    )
    repetition_penalty: float = opt(
        1.1, "Divide logits of already generated tokens by this (1 = off)."
    )
    seed: int = opt(0, "Sampling seed.")


@dataclass(frozen=True)
class ExportConfig:
    """Stage 6: Hugging Face folder with model card."""

    out: str = opt("", "Output folder ('' = RUN_DIR/export).")
    tags: list[str] = opt(["glotta", "text-generation"], "Extra model card tags.")


@dataclass(frozen=True)
class NerConfig:
    """'glotta eval ner': fine-tune an encoder for named entities on CoNLL column files."""

    train_file: str = opt(
        "",
        "CoNLL-style column file to fine-tune on (blank line between sentences); "
        "'pkg://PACKAGE/sub/path' reads a file inside an installed Python package.",
    )
    test_file: str = opt(
        "", "Column file to evaluate on ('' = hold out the last test_sentences of train_file)."
    )
    test_sentences: int = opt(
        0,
        "With test_file = '': the last N sentences of train_file are the test set and are not "
        "trained on (hironsancorpus: 50, the package's own 450/50 split).",
    )
    token_column: int = opt(0, "Column holding the token (0-based; negative counts from the end).")
    tag_column: int = opt(-1, "Column holding the gold tag (-1 = the last column).")
    separator: str = opt(
        "whitespace",
        "What separates columns: any run of whitespace, or one tab.",
        ("whitespace", "tab"),
    )
    scheme: str = opt(
        "IOB2",
        "Tag scheme; entities are read strictly (as seqeval's strict mode). 'auto' = BIOES/BILOU by "
        "their prefixes, IOB1 if more gold entities start with I- than with B-, else IOB2.",
        ("auto", "IOB1", "IOB2", "BIOES", "BILOU"),
    )
    model: str = opt(
        "",
        "Folder of the encoder to fine-tune: any AutoModelForTokenClassification checkpoint, e.g. "
        "a BertModel without head (a new head is added). '' = the run's export, else its latest "
        "checkpoint.",
    )
    tokenizer: str = opt(
        "", "Tokenizer folder (a fast tokenizer) if the model folder has none ('' = the model's)."
    )
    epochs: int = opt(3, "Passes over the training sentences.")
    learning_rate: float = opt(5e-5, "Peak AdamW learning rate.")
    batch_size: int = opt(16, "Sentences per optimizer step (and per prediction batch).")
    max_length: int = opt(
        256,
        "Subword tokens per sentence, special tokens included; longer sentences are truncated "
        "(counted and reported) and their cut-off words predicted as 'O'.",
    )
    seeds: list[int] = opt([0, 1, 2], "One fine-tuning per seed; results are mean ± std.")
    warmup_fraction: float = opt(0.1, "Share of the steps with linear warmup (then linear decay).")
    weight_decay: float = opt(0.01, "AdamW weight decay (not on biases and LayerNorm weights).")
    grad_clip: float = opt(1.0, "Clip the global gradient norm to this value (0 = off).")
    device: str = opt("auto", "'auto' (cuda if available), 'cpu' or 'cuda'.")


@dataclass(frozen=True)
class Recipe:
    recipe: RecipeInfo = field(default_factory=RecipeInfo)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    pack: PackConfig = field(default_factory=PackConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    ner: NerConfig = field(default_factory=NerConfig)


SECTIONS: dict[str, type] = {f.name: f.type for f in dataclasses.fields(Recipe)}  # type: ignore[misc]
SECTIONS = {name: typing.get_type_hints(Recipe)[name] for name in SECTIONS}


# ---------------------------------------------------------------------------------------------
# Type checking of TOML values against dataclass fields


def _check_value(value: Any, annotation: Any, where: str) -> Any:
    """Return ``value`` converted to ``annotation`` or raise GlottaError naming ``where``."""
    origin = typing.get_origin(annotation)
    if origin is list:
        (item_type,) = typing.get_args(annotation)
        if not isinstance(value, list):
            raise GlottaError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        return [_check_value(v, item_type, f"{where}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(annotation):  # a table, e.g. one of [[train.phases]]
        if isinstance(value, annotation):
            return value
        if not isinstance(value, dict):
            raise GlottaError(f"{where}: expected a table, got {type(value).__name__} {value!r}")
        return build_section(annotation, value, where, "")
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"unsupported annotation {annotation}")  # config fields are never unions
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif annotation is str:
        if isinstance(value, str):
            return value
    expected = getattr(annotation, "__name__", str(annotation))
    raise GlottaError(f"{where}: expected {expected}, got {type(value).__name__} {value!r}")


def field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def build_section(cls: type, values: dict[str, Any], origin: str, section: str) -> Any:
    """Instantiate ``cls`` from ``values``; unknown keys, wrong types and bad choices are errors."""
    hints = field_types(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        where = f"{origin}: [{section}] {key}" if section else f"{origin}.{key}"
        if key not in known:
            name = f"{section}.{key}" if section else key
            raise GlottaError(
                f"{origin}: unknown key '{name}' (known keys: {', '.join(sorted(known))})"
            )
        value = _check_value(value, hints[key], where)
        choices = known[key].metadata.get("choices")
        if choices and value not in choices:
            raise GlottaError(f"{where}: {value!r} is not one of {', '.join(choices)}")
        kwargs[key] = value
    return cls(**kwargs)


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    return dataclasses.asdict(recipe)
