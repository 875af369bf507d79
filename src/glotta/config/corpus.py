"""The settings of the data stages: corpus, tokenizer, pack."""

from __future__ import annotations

from dataclasses import dataclass

from glotta.config.fields import opt


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
    encoding: str = opt(
        "utf-8",
        "Encoding of txt/jsonl/tsv inputs: a Python codec name ('latin-1', 'cp1252', 'utf-16', "
        "...) or 'auto' to detect it per file (charset-normalizer; printed, and recorded in "
        "stats.json). A byte-order mark decides over 'utf-8' and 'auto'.",
    )
    input_hash: str = opt(
        "sampled",
        "How input files are fingerprinted to notice an edit: 'sampled' = size, modification "
        "time and 16 blocks of 64 KiB (cheap for a 100 GB dump); 'full' = every byte.",
        ("sampled", "full"),
    )
    max_undecodable_fraction: float = opt(
        0.001,
        "Refuse a txt/jsonl/tsv file when more than this share of its characters are bytes "
        "corpus.encoding cannot decode (each read as U+FFFD and counted in stats.json).",
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
        "datatrove tasks (pip install 'glotta[scale]'); finished tasks are skipped on a re-run. "
        "'ray' joins the cluster named by RAY_ADDRESS (else starts one on this machine).",
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

    threads: int = opt(
        0,
        "Cores that encode (0 = all): worker processes for splits over 32 MiB, tokenizer "
        "threads for smaller ones.",
    )
    batch_documents: int = opt(1000, "Documents tokenized per batch (bounds memory).")
