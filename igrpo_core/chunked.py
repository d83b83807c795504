"""Log-probs and entropy of target tokens through the output layer, chunk by chunk: never a (B, T, V)
logits tensor, and on CPU never more than two chunk-sized allocations per call.

`chunked_token_logps(hidden, weight, bias, target)` equals
`losses.selective_log_softmax(linear(hidden) / T, target)` and `losses.token_entropy` of the same logits
(tests/test_chunked.py: values and gradients), with autograd holding only the hidden states and one
logsumexp per row; backward recomputes each chunk's logits.

Why the buffers: the chunk's logits and their exponentials are written into two (rows, V) float32
buffers taken once per call, every step in place (the logsumexp exactly as ATen computes it: amax,
exp of the shifted logits, sum, log, add), and the weight gradient accumulates with addmm_. The first
version allocated five or six fresh (rows, V) tensors per chunk and a (V, H) product per chunk in
backward; glibc keeps such freed chunks, and a GRPO step's peak RSS reached 4 GB for 150 MB of live
tensors (bench/step_vs_trl.py, README Performance). The same chunk also gives the entropy from the
exponentials the logsumexp already computed: H = lse - sum_v e_v z_v / sum_v e_v.
"""
from __future__ import annotations

import torch

CHUNK_ELEMENTS = 1 << 23  # logits per chunk (32 MiB in float32), whatever the vocabulary size


def chunk_rows(vocab: int, budget: int = CHUNK_ELEMENTS) -> int:
    return max(1, budget // vocab)


def _logits_into(out: torch.Tensor, h, weight, bias, temperature: float, autocast_on: bool) -> torch.Tensor:
    """out (n, V) float32 <- linear(h) / temperature, the matmul as the model's lm_head would run it
    (in autocast's dtype when active, else in the inputs' dtype) and written in place."""
    if autocast_on or not (h.dtype == weight.dtype == out.dtype):
        out.copy_(torch.nn.functional.linear(h, weight, bias))
    elif bias is None:
        torch.mm(h, weight.t(), out=out)
    else:
        torch.addmm(bias, h, weight.t(), out=out)
    if temperature != 1.0:   # x / 1.0 == x: skipping it changes no bit
        out.div_(temperature)
    return out


def _logsumexp_into(z: torch.Tensor, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.logsumexp(z, -1) computed as ATen does (so the same bits), leaving e = exp(z - max):
    returns (lse (n,), sum_v e (n,))."""
    m = z.amax(-1, keepdim=True)                                                          # (n, 1)
    m.masked_fill_(m.abs() == float("inf"), 0.0)
    s = torch.sub(z, m, out=e).exp_().sum(-1)                                             # (n,)
    return s.log().add_(m[:, 0]), s


class _ChunkedLogps(torch.autograd.Function):
    """log p(target) of `hidden @ weight.T (+ bias)` / temperature, chunk by chunk over rows.

    Forward keeps only the hidden states and one logsumexp per row; backward recomputes each chunk's
    logits, so at most (chunk, V) logits exist at a time and none is held by autograd. The matmul
    runs in the autocast dtype active at forward time (as the model's lm_head would), softmax in fp32.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, target, temperature, rows, with_entropy):
        dev = hidden.device.type
        ctx.amp = (dev, torch.is_autocast_enabled(dev), torch.get_autocast_dtype(dev))
        n_all, rows = hidden.shape[0], min(rows, max(1, hidden.shape[0]))
        zbuf = torch.empty((rows, weight.shape[0]), dtype=torch.float32, device=hidden.device)   # (rows, V)
        ebuf = torch.empty_like(zbuf)
        logp = torch.empty(n_all, dtype=torch.float32, device=hidden.device)
        lse = torch.empty_like(logp)
        ent = torch.empty_like(logp) if with_entropy else logp.new_zeros(0)
        for s in range(0, n_all, rows):
            n = min(rows, n_all - s)
            z = _logits_into(zbuf[:n], hidden[s: s + n], weight, bias, temperature, ctx.amp[1])   # (n, V)
            chunk_lse, total = _logsumexp_into(z, ebuf[:n])                                       # (n,) each
            logp[s: s + n] = z.gather(-1, target[s: s + n, None])[:, 0] - chunk_lse
            lse[s: s + n] = chunk_lse
            if with_entropy:  # H = lse - sum_v p_v z_v, with p = e / sum(e)
                ent[s: s + n] = chunk_lse - ebuf[:n].mul_(z).sum(-1) / total
        ctx.save_for_backward(hidden, weight, bias, target, lse)
        ctx.temperature, ctx.rows = temperature, rows
        ctx.mark_non_differentiable(ent)  # entropy is a metric
        return logp, ent

    @staticmethod
    def backward(ctx, grad_logp, _grad_ent):
        hidden, weight, bias, target, lse = ctx.saved_tensors
        device, enabled, dtype = ctx.amp
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_h = torch.zeros_like(hidden) if need_h else None
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if need_w else None
        grad_b = torch.zeros_like(bias, dtype=torch.float32) if need_b else None
        zbuf = torch.empty((ctx.rows, weight.shape[0]), dtype=torch.float32, device=hidden.device)
        plain = not enabled and hidden.dtype == weight.dtype == torch.float32   # grad_w by addmm_ in place
        with torch.autocast(device, dtype=dtype, enabled=enabled):
            for s in range(0, hidden.shape[0], ctx.rows):
                sl = slice(s, s + ctx.rows)
                h = hidden[sl]                                                                  # (n, H)
                z = _logits_into(zbuf[:h.shape[0]], h, weight, bias, ctx.temperature, enabled)  # (n, V)
                # d logp / d z = (onehot(target) - softmax(z)) * grad / T, as (p - onehot) * (-grad / T)
                g = torch.sub(z, lse[sl, None], out=z).exp_()                                    # (n, V)
                g.scatter_add_(1, target[sl, None], -torch.ones_like(g[:, :1]))
                g.mul_(-(grad_logp[sl, None] / ctx.temperature))
                if need_h:
                    grad_h[sl] = _mm(g, weight, enabled).to(hidden.dtype)                         # (n, H)
                if need_w and plain and s == 0:   # the first chunk as mm (= zeros + g.T @ h) ...
                    torch.mm(g.t(), h, out=grad_w)                                                # (V, H)
                elif need_w and plain:            # ... then accumulated in place
                    grad_w.addmm_(g.t(), h)                                                       # (V, H)
                elif need_w:
                    grad_w += _mm(g.T, h, enabled).float()                                        # (V, H)
                if need_b:
                    grad_b += g.sum(0)
        return (grad_h, grad_w.to(weight.dtype) if need_w else None, grad_b.to(bias.dtype) if need_b else None,
                None, None, None, None)


def _mm(a, b, autocast_on: bool):
    """a @ b as the lm_head's autograd would compute it: in autocast's dtype, else in b's dtype."""
    return a @ b if autocast_on else a.to(b.dtype) @ b


def chunked_token_logps(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                        target: torch.Tensor, *, temperature: float = 1.0, with_entropy: bool = False,
                        rows: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs (grad to hidden, weight, bias) and entropies (no grad) of `target` under the output
    layer: hidden (..., H), weight (V, H), target (...) -> two (...) float32 tensors.

    Equal to `selective_log_softmax(linear(hidden) / T, target)` and `token_entropy` of the same
    logits (tests/test_chunked.py), but never holds more than `rows` x V logits at once.
    """
    shape = target.shape
    rows = rows or chunk_rows(weight.shape[0])
    logp, ent = _ChunkedLogps.apply(hidden.reshape(-1, hidden.shape[-1]), weight, bias,
                                    target.reshape(-1).long(), float(temperature), rows, with_entropy)
    return logp.view(shape), (ent.view(shape) if with_entropy else None)
