"""The settings of the model and of the training stages: model, train (and its phases), distill."""

from __future__ import annotations

from dataclasses import dataclass

from glotta.config.fields import opt


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
    zero_init_projections: bool = opt(
        False,
        "Start the output projection of every block's attention and feed-forward at zero, so "
        "each block begins as the identity (the modded-nanogpt speedrun's initialisation). "
        "Only the starting weights change: the exported model is an ordinary one.",
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
    decay: str = opt(
        "cosine",
        "Schedule after warmup: 'cosine' or 'linear' decay to min_lr_ratio over the whole run, "
        "'constant', or 'wsd' (warmup-stable-decay: the peak until the last cooldown_fraction of "
        "the steps, then a cool-down to min_lr_ratio; a run still in its stable part can be "
        "extended by resuming with a larger max_steps).",
        ("cosine", "linear", "constant", "wsd"),
    )
    cooldown_fraction: float = opt(
        0.2, "decay = 'wsd': share of the steps spent cooling down at the end."
    )
    cooldown_shape: str = opt(
        "linear",
        "decay = 'wsd': the cool-down's shape, 'linear' or '1-sqrt' (1 - sqrt(progress); "
        "Hägele et al. 2024).",
        ("linear", "1-sqrt"),
    )
    optimizer: str = opt(
        "adamw",
        "'adamw', or 'muon': Muon (torch.optim.Muon, orthogonalised momentum) for the 2-D "
        "weight matrices inside the transformer blocks and AdamW for embeddings, the LM head, "
        "norms and biases. Not with parallelism = 'fsdp' (Muon needs whole matrices).",
        ("adamw", "muon"),
    )
    muon_learning_rate: float = opt(
        0.0, "optimizer = 'muon': peak learning rate of the Muon group (0 = learning_rate)."
    )
    muon_momentum: float = opt(0.95, "optimizer = 'muon': Muon's momentum.")
    muon_nesterov: bool = opt(True, "optimizer = 'muon': Nesterov momentum.")
    muon_ns_steps: int = opt(5, "optimizer = 'muon': Newton-Schulz iterations per update.")
    muon_adjust_lr: str = opt(
        "match_rms_adamw",
        "optimizer = 'muon': how the Muon learning rate is scaled per matrix shape: "
        "'match_rms_adamw' (0.2 x sqrt(max(rows, cols)); Liu et al. 2025, so AdamW's learning "
        "rate and weight decay carry over) or 'original' (sqrt(max(1, rows/cols)); Jordan "
        "et al. 2024, which wants a learning rate near 0.02).",
        ("match_rms_adamw", "original"),
    )
    weight_decay: float = opt(
        0.1,
        "Decoupled weight decay of the matrices (AdamW's and Muon's; not applied to biases "
        "and norms).",
    )
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
    reuse_host_memory: bool = opt(
        True,
        "Training on a CPU: keep freed memory in the process for the next step (glibc malloc "
        "without mmap or trimming) instead of mapping and zero-filling every large buffer "
        "again (faster steps, most under bf16; the process keeps its peak heap; "
        "glotta.train.host_memory). Off = the C library's defaults.",
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
