"""An independent reference for the official computation, for tests.

The official released model is the layer chain of docs/scg_notes.md §2 (convs with their own zero
padding). Its composed 21×21 kernel is recovered here by probing that chain with autograd — not
with scg_core's own composition — and used as the official code does: ``conv2d(stride 4,
padding 10)``, mask, ``conv_transpose2d(stride 4, padding 10)`` with no output padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def layer_chain(x, w, stride2=2):
    """The released bipolar encoder as padded layers: ``x`` normalised ``[B,3,H,W]``."""
    k = w["pathway_a"].shape[0]
    K = w["pathway_a"].shape[-1]
    p = K // 2
    a = F.conv2d(x, w["pathway_a"], stride=2, padding=p)
    b = F.conv2d(F.conv2d(x, w["pathway_b"], stride=2, padding=p), w["surround"], padding=p, groups=k)
    return F.conv2d(a + b, w["module_kernels"], stride=stride2, padding=p, groups=k)


def probe_kernel(w, receptive_field=21, stride=4):
    """Recover the composed kernel ``[k·l, 3, R, R]`` of :func:`layer_chain` by autograd."""
    P = (receptive_field - 1) // 2
    y0 = 4  # an interior output cell; its footprint starts at stride·y0 - P
    size = stride * y0 - P + receptive_field + 8
    x = torch.zeros(1, w["pathway_a"].shape[1], size, size, dtype=w["pathway_a"].dtype, requires_grad=True)
    out = layer_chain(x, w)
    rows = []
    for j in range(out.shape[1]):
        (grad,) = torch.autograd.grad(out[0, j, y0, y0], x, retain_graph=True)
        s = stride * y0 - P
        rows.append(grad[0, :, s : s + receptive_field, s : s + receptive_field])
    return torch.stack(rows)


def official_raw_hint(x_normalised, kernel, channel_mask, stride=4, padding=10):
    """The official hint computation: composed conv, mask, transposed conv, no output padding."""
    f = F.conv2d(x_normalised, kernel, stride=stride, padding=padding)
    f = f * channel_mask.view(1, -1, 1, 1).to(f.dtype)
    return F.conv_transpose2d(f, kernel, stride=stride, padding=padding)
