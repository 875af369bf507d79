"""LM head + loss fused and chunked: the full ``(tokens x vocab)`` logits are never stored.

The plain computation ``cross_entropy(hidden @ W.T, targets)`` keeps the logits, their fp32
copy and the softmax for the backward pass: at block 1024, batch 8 and GPT-2's 50,257 tokens
that is ~1.6 GB per copy, more than the rest of a GPT-2 small step. Here the positions are
taken ``chunk_size`` rows at a time: each chunk's logits are computed, turned into the chunk's
loss *and* its gradient at once (softmax minus one-hot needs nothing but the logits), and that
gradient is multiplied into the gradients of the hidden states and of the head weight before
the next chunk; the logits are then dropped. The backward pass only scales the stored
gradients by the incoming one. Same arithmetic as the plain path (fp32 softmax), one chunk of
logits alive at a time. (The idea: Wijmans et al. 2025, "Cut Your Losses in Large-Vocabulary
Language Models"; Liger Kernel's fused linear cross-entropy; llm.c's fused classifier.)

Two losses share the chunk loop, both sums over positions as the training loop expects:

- ``alpha_clm`` x next-token cross-entropy (targets equal to ``ignore_index`` count nothing);
- ``alpha_ce`` x T^2 x KL(softmax(teacher / T) || softmax(student / T)) for distillation (every
  position, as :func:`glotta.distill.losses.soft_target_kl_sum`), with the teacher's logits given
  whole or computed chunk by chunk from its final hidden states and head.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
import weakref
from collections.abc import Iterator

import torch

IGNORE_INDEX = -100
# Elements of one chunk's fp32 logits: 2^25 = 128 MiB (about 650 positions at 50k tokens).
CHUNK_ELEMENTS = 2**25


@dataclasses.dataclass
class TeacherHead:
    """The teacher's side of the KL term: its logits, or its final hidden states and head.

    ``vocab_size`` cuts a padded teacher vocabulary to the student's ids.
    """

    logits: torch.Tensor | None = None
    hidden: torch.Tensor | None = None
    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    vocab_size: int | None = None

    def chunk(self, start: int, stop: int) -> torch.Tensor:
        if self.logits is not None:
            logits = self.logits.reshape(-1, self.logits.size(-1))[start:stop]
        else:
            assert self.hidden is not None and self.weight is not None
            h = self.hidden.reshape(-1, self.hidden.size(-1))[start:stop]
            logits = torch.nn.functional.linear(h, self.weight.to(h.dtype), _cast(self.bias, h))
        return logits[:, : self.vocab_size].float()


def _cast(bias: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    return None if bias is None else bias.to(like.dtype)


def default_chunk_size(vocab_size: int) -> int:
    return max(64, CHUNK_ELEMENTS // max(vocab_size, 1))


class _FusedHeadLoss(torch.autograd.Function):
    """Forward computes the loss and every gradient; backward scales them (one output used)."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, teacher, spec):
        alpha_clm, alpha_ce, temperature, ignore_index, chunk_size, compiled = spec
        shape = hidden.shape
        h_all = hidden.reshape(-1, shape[-1])
        t_all = targets.reshape(-1)
        n = h_all.size(0)
        # Under autocast the head runs in the autocast dtype, as nn.Linear would.
        device_type = hidden.device.type
        compute = (
            torch.get_autocast_dtype(device_type)
            if torch.is_autocast_enabled(device_type)
            else hidden.dtype
        )
        w = weight.to(compute)
        b = _cast(bias, w)
        need_h = ctx.needs_input_grad[0]
        need_w = ctx.needs_input_grad[1]
        need_b = bias is not None and ctx.needs_input_grad[2]
        grad_h = torch.empty_like(h_all) if need_h else None
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if need_w else None
        grad_b = torch.zeros_like(bias, dtype=torch.float32) if need_b else None
        ce_sum = torch.zeros((), dtype=torch.float32, device=hidden.device)
        kl_sum = torch.zeros((), dtype=torch.float32, device=hidden.device)
        t = float(temperature)
        # Reused buffers, one chunk each. A fresh one per chunk would cost more than its
        # arithmetic on CPU: a buffer this large comes from mmap, so every chunk would
        # page-fault and zero its ~128 MiB again. The head's matmul writes ``raw`` (the compute
        # dtype: bf16 under autocast); the eager softmax works on an fp32 copy, the compiled
        # kernel reads ``raw`` and writes the gradient into ``grad_out``.
        rows = min(chunk_size, n)
        vocab = w.size(0)
        kernel = _compiled_chunk_kernel() if compiled and (alpha_clm or alpha_ce) else None
        low = compute != torch.float32
        raw_buffer = torch.empty(rows, vocab, dtype=compute, device=w.device)
        fp32_buffer = raw_buffer if not low else None
        grad_out = torch.empty_like(raw_buffer) if kernel is not None else None
        low_grad_w = torch.empty_like(w) if low and need_w else None
        with torch.autocast(device_type, enabled=False):
            for start in range(0, n, chunk_size):
                stop = min(n, start + chunk_size)
                h = h_all[start:stop].to(compute)
                raw = raw_buffer[: stop - start]
                _head(h, w, b, out=raw)
                grad = None
                if alpha_clm:
                    tgt = t_all[start:stop]
                    valid = tgt != ignore_index
                    safe = torch.where(valid, tgt, torch.zeros_like(tgt)).unsqueeze(1)
                    valid_rows = valid.to(torch.float32).unsqueeze(1)
                if kernel is not None:
                    grad = grad_out[: stop - start]
                    ce, kl = kernel(
                        raw, grad, safe if alpha_clm else None, valid_rows if alpha_clm else None,
                        teacher.chunk(start, stop) if alpha_ce else None, alpha_clm, alpha_ce, t,
                    )  # fmt: skip
                    ce_sum += ce
                    kl_sum += kl
                else:
                    if fp32_buffer is None:
                        fp32_buffer = torch.empty(rows, vocab, device=w.device)
                    logits = fp32_buffer[: stop - start]
                    if low:
                        logits.copy_(raw)
                    if alpha_clm:
                        row_weight = valid_rows * alpha_clm
                        picked = logits.gather(1, safe)
                        if alpha_ce:  # the KL term reads the logits too: the softmax in a copy
                            lse = torch.logsumexp(logits, dim=1, keepdim=True)
                            probs = (logits - lse).exp_().mul_(row_weight)
                        else:  # the logits become their own gradient, in place
                            top = logits.amax(1, keepdim=True)
                            probs = logits.sub_(top).exp_()
                            total = probs.sum(1, keepdim=True)
                            lse = top + total.log()
                            probs.mul_(row_weight / total)
                        ce_sum += ((lse - picked) * valid_rows).sum()
                        # d CE / d logits = softmax - one-hot, zero on ignored rows
                        probs.scatter_add_(1, safe, -row_weight)
                        grad = probs
                        del probs
                    if alpha_ce:
                        # The logits are not read again (the cross-entropy is done): scaled in
                        # place; each full-chunk temporary is another pass over the chunk.
                        log_s = torch.log_softmax(logits.div_(t), dim=1)
                        log_t = torch.log_softmax(teacher.chunk(start, stop) / t, dim=1)
                        p_t = log_t.exp()
                        # sum of p_t (log_t - log_s): a dot product per row, no temporary
                        kl = p_t.unsqueeze(1) @ log_t.sub_(log_s).unsqueeze(2)
                        kl_sum += kl.sum() * (t * t)
                        # d (T^2 KL) / d logits = T (softmax(z / T) - p_teacher)
                        q_minus_p = log_s.exp_().sub_(p_t)
                        if grad is None:
                            grad = q_minus_p.mul_(alpha_ce * t)
                        else:
                            grad.add_(q_minus_p, alpha=alpha_ce * t)
                        del log_s, log_t, p_t, q_minus_p
                    del logits
                    if grad is None:  # neither term weighted: a zero gradient
                        grad = torch.zeros(stop - start, vocab, device=h.device)
                g = raw.copy_(grad) if grad.dtype != compute else grad  # bf16: into raw
                if grad_h is not None:
                    if grad_h.dtype == g.dtype:
                        torch.mm(g, w, out=grad_h[start:stop])
                    else:
                        grad_h[start:stop] = (g @ w).to(grad_h.dtype)
                if low_grad_w is not None:
                    grad_w.add_(torch.mm(g.t(), h, out=low_grad_w))
                elif grad_w is not None:
                    grad_w.addmm_(g.t(), h)  # no (vocab x width) temporary per chunk
                if grad_b is not None:
                    grad_b += grad.sum(0, dtype=torch.float32)
        total = alpha_clm * ce_sum + alpha_ce * kl_sum
        ctx.save_for_backward(
            grad_h.reshape(shape) if grad_h is not None else None,
            grad_w.to(weight.dtype) if grad_w is not None else None,
            grad_b.to(bias.dtype) if grad_b is not None else None,
        )
        ctx.mark_non_differentiable(ce_sum, kl_sum)
        return total, ce_sum, kl_sum

    @staticmethod
    def backward(ctx, grad_total, _grad_ce, _grad_kl):
        grad_h, grad_w, grad_b = ctx.saved_tensors

        def scaled(g):  # in place: the stored gradients are used once (no device sync)
            return None if g is None else g.mul_(grad_total.to(g.dtype))

        return scaled(grad_h), scaled(grad_w), scaled(grad_b), None, None, None


def _chunk_loss_and_grad(
    logits: torch.Tensor,
    grad_out: torch.Tensor,
    safe: torch.Tensor | None,
    valid_rows: torch.Tensor | None,
    teacher_logits: torch.Tensor | None,
    alpha_clm: float,
    alpha_ce: float,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One chunk's summed cross-entropy and T^2 x KL; writes the chunk's gradient of
    ``alpha_clm x CE + alpha_ce x T^2 x KL`` to ``grad_out``. Compiled, each row's maxima,
    sums of exponentials and gradient are a few fused loops (the eager path reads and writes
    the chunk about eight times for the cross-entropy alone, twenty with the KL term).
    ``safe`` / ``valid_rows`` (targets with ignored ones at 0, and 1/0 per row) are None
    without the cross-entropy term, ``teacher_logits`` None without the KL term."""
    x = logits.float()
    zero = x.new_zeros(())
    ce = kl = zero
    grad = zero
    if safe is not None and valid_rows is not None:
        top = x.amax(1, keepdim=True)
        exp = (x - top).exp()
        total = exp.sum(1, keepdim=True)
        lse = top + total.log()
        picked = x.gather(1, safe)
        one_hot = torch.arange(x.size(1), device=x.device) == safe
        row_weight = valid_rows * alpha_clm
        grad = exp * (row_weight / total) - one_hot * row_weight  # softmax - one-hot
        ce = ((lse - picked) * valid_rows).sum()
    if teacher_logits is not None:
        t = temperature
        log_s = torch.log_softmax(x / t, dim=1)
        log_t = torch.log_softmax(teacher_logits.float() / t, dim=1)
        p_t = log_t.exp()
        kl = (p_t * (log_t - log_s)).sum() * (t * t)
        grad = grad + (log_s.exp() - p_t) * (alpha_ce * t)  # d(T^2 KL)/dz = T (q_s - p_t)
    grad_out.copy_(grad)
    return ce, kl


class _CompiledChunkKernel:
    """``torch.compile`` of :func:`_chunk_loss_and_grad`, given up for the eager one (with a
    warning) if compiling it fails: a compiler bug must not stop a training run."""

    def __init__(self) -> None:
        self.compiled = torch.compile(_chunk_loss_and_grad)
        self.working = False

    def __call__(self, *args) -> tuple[torch.Tensor, torch.Tensor]:
        if self.working:
            return self.compiled(*args)
        try:
            result = self.compiled(*args)
        except Exception as error:  # noqa: BLE001 - any compiler failure: run eagerly
            warnings.warn(
                f"glotta: compiling the fused loss's chunk kernel failed ({type(error).__name__}: "
                f"{str(error).splitlines()[0] if str(error) else ''}); it runs eagerly",
                stacklevel=2,
            )
            self.compiled = _chunk_loss_and_grad
            result = self.compiled(*args)
        self.working = True
        return result


@functools.cache
def _compiled_chunk_kernel() -> _CompiledChunkKernel:
    return _CompiledChunkKernel()


def _head(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, out: torch.Tensor) -> None:
    """``out = h @ w.T (+ b)`` written into ``out``."""
    if b is None:
        torch.mm(h, w.t(), out=out)
    else:
        torch.addmm(b, h, w.t(), out=out)


def _check(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> None:
    if hidden.size(-1) != weight.size(1):
        raise ValueError(f"hidden width {hidden.size(-1)} != head weight width {weight.size(1)}")
    if hidden.numel() // hidden.size(-1) != targets.numel():
        raise ValueError(f"{targets.numel()} targets for {hidden.numel() // hidden.size(-1)} rows")


def linear_cross_entropy_sum(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    bias: torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
    chunk_size: int | None = None,
    compiled: bool = False,
) -> torch.Tensor:
    """``cross_entropy(hidden @ weight.T + bias, targets, reduction='sum')`` without the logits.

    ``hidden`` is ``(..., d)``, ``weight`` ``(vocab, d)`` (tied or not), ``targets`` one id per
    row of ``hidden``; rows whose target is ``ignore_index`` count nothing. ``compiled``: each
    chunk's softmax, loss and gradient in one ``torch.compile``'d pass (for compiled models).
    """
    _check(hidden, weight, targets)
    chunk = chunk_size or default_chunk_size(weight.size(0))
    spec = (1.0, 0.0, 1.0, ignore_index, chunk, compiled)
    total, _, _ = _FusedHeadLoss.apply(hidden, weight, bias, targets, None, spec)
    return total


def linear_distillation_sum(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    teacher: TeacherHead,
    temperature: float,
    alpha_ce: float,
    alpha_clm: float,
    bias: torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
    chunk_size: int | None = None,
    compiled: bool = False,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``alpha_ce`` x T^2 x KL + ``alpha_clm`` x cross-entropy, summed over positions, fused.

    Returns the weighted total and each term's sum (detached), like
    :func:`glotta.distill.losses.distillation_loss_sum` without its cosine term. ``compiled``
    as for :func:`linear_cross_entropy_sum`.
    """
    _check(hidden, weight, targets)
    chunk = chunk_size or default_chunk_size(weight.size(0))
    spec = (float(alpha_clm), float(alpha_ce), float(temperature), ignore_index, chunk, compiled)
    total, ce, kl = _FusedHeadLoss.apply(hidden, weight, bias, targets, teacher, spec)
    parts = {}
    if alpha_ce:
        parts["kl"] = kl
    if alpha_clm:
        parts["ce"] = ce
    return total, parts


# ---------------------------------------------------------------------------------------------
# Getting the final hidden states out of a (possibly compiled or DDP-wrapped) causal LM


def _wrapper_chain(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``model``, then each module it wraps: DDP's ``.module``, ``torch.compile``'s ``._orig_mod``."""
    while isinstance(model, torch.nn.Module):
        yield model
        # Not ``a or b``: a compiled module's truth value asks the model for len() and raises.
        inner = getattr(model, "module", None)
        model = inner if inner is not None else getattr(model, "_orig_mod", None)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model inside DDP (``.module``) and ``torch.compile`` (``._orig_mod``)."""
    *_, core = _wrapper_chain(model)
    return core


def is_compiled(model: torch.nn.Module) -> bool:
    """Whether ``model`` or a module it wraps (DDP's ``.module``) is ``torch.compile``'d."""
    return any(hasattr(m, "_orig_mod") for m in _wrapper_chain(model))


class _LastHidden:
    """A forward hook on the base model that keeps its last output's final hidden states.

    Registered once per model and kept (adding and removing a hook at every step would make a
    compiled model recompile); it holds one ``(batch, block, width)`` tensor between calls.
    """

    def __init__(self) -> None:
        self.value: torch.Tensor | None = None

    def __call__(self, module, args, output) -> None:
        self.value = output[0] if isinstance(output, tuple) else output.last_hidden_state


_HOOKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def supports_fused_head(model: torch.nn.Module) -> bool:
    """A transformers causal LM whose forward takes ``logits_to_keep`` (GPT-2, Llama, ...)."""
    import inspect

    core = unwrap(model)
    head = core.get_output_embeddings() if hasattr(core, "get_output_embeddings") else None
    if not isinstance(head, torch.nn.Linear) or getattr(core, "base_model", core) is core:
        return False
    return "logits_to_keep" in inspect.signature(core.forward).parameters


def hidden_and_head(model: torch.nn.Module, inputs: torch.Tensor, **kwargs):
    """One forward through ``model`` (wrappers included) that computes no logits.

    Returns the final hidden states (after the last norm), the LM head (``nn.Linear``) and the
    model's output (e.g. its ``hidden_states`` when ``output_hidden_states=True`` is passed).
    ``logits_to_keep`` with no positions makes the head run on zero rows, so DDP and
    ``torch.compile`` see an ordinary call of the whole model.
    """
    core = unwrap(model)
    hook = _HOOKS.get(core)
    if hook is None:
        hook = _LastHidden()
        core.base_model.register_forward_hook(hook)
        _HOOKS[core] = hook
    no_positions = torch.zeros(0, dtype=torch.long, device=inputs.device)
    out = model(input_ids=inputs, logits_to_keep=no_positions, **kwargs)
    hidden, hook.value = hook.value, None
    if hidden is None:
        raise RuntimeError("the model's base did not run: no hidden states for the fused loss")
    return hidden, core.get_output_embeddings(), out


def fused_token_loss_sum(
    model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """Summed next-token cross-entropy of a causal LM, the head and loss fused and chunked."""
    hidden, head, _ = hidden_and_head(model, inputs)
    return linear_cross_entropy_sum(
        hidden, head.weight, targets, head.bias, compiled=is_compiled(model)
    )
