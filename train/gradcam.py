"""Differentiable Grad-CAM (Selvaraju et al.) at the teacher's last conv layer.

CEOD (seed 001, eq. 1-2 and 8) puts the Grad-CAM heat map *inside* the loss, so the map must stay in
the autograd graph: the gradient of the class logit w.r.t. the features is taken with create_graph=True,
and the loss can then move both the backbone (through the features) and the classifier (through the
importance weights).
"""

from __future__ import annotations

import torch


def grad_cam(
    features: torch.Tensor,
    logits: torch.Tensor,
    class_index: torch.Tensor,
    create_graph: bool = True,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Heat maps [N, h, w] in 0..1 of class `class_index[n]` for every image n.

    features: last conv activations [N, K, h, w] that `logits` [N, C] were computed from (they must be
    part of the graph). alpha_k = mean over pixels of d logit_c / d A_k; map = ReLU(sum_k alpha_k A_k),
    divided by its per-image maximum (an all-zero map stays zero).
    """
    if not features.requires_grad:
        raise ValueError("grad_cam needs features that are part of the autograd graph (requires_grad)")
    class_index = class_index.to(device=logits.device, dtype=torch.long).view(-1, 1)
    # Summing over the batch is exact: image n's logit depends only on image n's features.
    selected = logits.gather(1, class_index).sum()
    (gradients,) = torch.autograd.grad(selected, features, create_graph=create_graph)
    alpha = gradients.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((alpha * features).sum(dim=1))
    return cam / (cam.amax(dim=(1, 2), keepdim=True) + eps)
