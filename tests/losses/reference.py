"""Independent float64 NumPy references of the losses, written anchor by
anchor from the formulas of docs/design.md §2 (no shared code with the
library), and a finite-difference gradient."""

import numpy as np


def normalize(y):
    return y / np.linalg.norm(y, axis=-1, keepdims=True)


def logsumexp(values):
    values = np.asarray(values, dtype=np.float64)
    top = np.max(values)
    return top + np.log(np.sum(np.exp(values - top)))


def two_view(y, temperature, negatives="all", kind="infonce", labels=None,
             sigma=0.5, normalize_embeddings=True):
    """Per-sample mean of the two anchor losses for InfoNCE / DCL / DCLW.

    kind: "infonce" (positives stay in the denominator), "dcl" (they do not),
    "dclw" (DCL with w_i = 2 - exp(s_ii/σ) / mean_j exp(s_jj/σ)). An anchor
    whose denominator is empty (DCL without negatives) contributes 0.
    """
    z = np.asarray(y, dtype=np.float64)
    if normalize_embeddings:
        z = normalize(z)
    n = z.shape[0]
    weights = np.ones(n)
    if kind == "dclw":
        s = np.array([z[i, 0] @ z[i, 1] for i in range(n)]) / sigma
        weights = 2.0 - np.exp(s) / np.mean(np.exp(s))
    losses = np.zeros(n)
    for i in range(n):
        for v in (0, 1):
            anchor = z[i, v]
            logits, is_self, is_positive = [], [], []
            views = (0, 1) if negatives == "all" else (1 - v,)
            for u in views:
                for j in range(n):
                    own = j == i and u == v
                    if labels is None:
                        positive = j == i and u != v
                    else:
                        positive = labels[j] == labels[i] and not own
                    logits.append(anchor @ z[j, u] / temperature)
                    is_self.append(own)
                    is_positive.append(positive)
            logits = np.array(logits)
            is_self = np.array(is_self)
            is_positive = np.array(is_positive)
            in_denominator = ~is_self
            if kind in ("dcl", "dclw"):
                in_denominator &= ~is_positive
            if not in_denominator.any():
                continue  # No negatives (DCL): the loss is defined as 0.
            positive_term = weights[i] * np.mean(logits[is_positive])
            losses[i] += 0.5 * (logsumexp(logits[in_denominator]) - positive_term)
    return losses


def clip(y, temperature=0.07, labels=None):
    """(CE(A·Bᵀ/τ) + CE(B·Aᵀ/τ)) / 2 per sample."""
    z = normalize(np.asarray(y, dtype=np.float64))
    a, b = z[:, 0], z[:, 1]
    n = len(z)
    losses = np.zeros(n)
    for anchors, others in ((a, b), (b, a)):
        logits = anchors @ others.T / temperature
        for i in range(n):
            positives = [i] if labels is None else [
                j for j in range(n) if labels[j] == labels[i]
            ]
            losses[i] += 0.5 * (logsumexp(logits[i]) - np.mean(logits[i, positives]))
    return losses


def siglip(y, temperature=0.1, bias=-10.0, labels=None):
    """Σ_j -log σ(z_ij (<a_i, b_j>/τ + b)) per sample i, z = +1 for a pair."""
    z = normalize(np.asarray(y, dtype=np.float64))
    a, b = z[:, 0], z[:, 1]
    n = len(z)
    ids = np.arange(n) if labels is None else np.asarray(labels)
    losses = np.zeros(n)
    for i in range(n):
        for j in range(n):
            logit = a[i] @ b[j] / temperature + bias
            sign = 1.0 if ids[i] == ids[j] else -1.0
            losses[i] += np.logaddexp(0.0, -sign * logit)  # -log σ(sign·logit)
    return losses


def mocov3(y, temperature=0.2):
    """ctr(q1, k2) + ctr(q2, k1), ctr = CE(q·kᵀ/τ, own row) · 2τ."""
    z = normalize(np.asarray(y, dtype=np.float64))
    q1, q2, k1, k2 = z[:, 0], z[:, 1], z[:, 2], z[:, 3]
    losses = np.zeros(len(z))
    for q, k in ((q1, k2), (q2, k1)):
        logits = q @ k.T / temperature
        for i in range(len(z)):
            losses[i] += (logsumexp(logits[i]) - logits[i, i]) * 2 * temperature
    return losses


def numeric_gradient(function, y, step=1e-6):
    """Central finite differences of sum(function(y)) in float64."""
    y = np.asarray(y, dtype=np.float64)
    gradient = np.zeros_like(y)
    flat = y.reshape(-1)
    flat_gradient = gradient.reshape(-1)
    for index in range(flat.size):
        original = flat[index]
        flat[index] = original + step
        upper = np.sum(function(y))
        flat[index] = original - step
        lower = np.sum(function(y))
        flat[index] = original
        flat_gradient[index] = (upper - lower) / (2 * step)
    return gradient
