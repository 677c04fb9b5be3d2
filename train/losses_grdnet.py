"""GRD-Net's losses (seed 002, eq. 1-6): the generator's L_gan, the discriminator's BCE, the U-Net's focal loss.

- L_gan = w_adv * L2(F_D(X), F_D(X_hat)) + w_con * (w_l1 * L1(X, X_hat) + w_ssim * (1 - SSIM(X, X_hat)))
  + w_enc * L2(z, z_hat), with the paper's weights 1, 50, 1 (and 1, 1 inside L_con). L_adv is GANomaly's
  feature matching on the discriminator's last features (never the saturating generator BCE); X is the clean
  image, X_hat the reconstruction of the image with defects, z = E1(X_n), z_hat = E2(X_hat).
- The discriminator: BCE of its patch logits, real (X) -> 1 and fake (X_hat) -> 0, averaged.
- The U-Net: binary focal loss (gamma 2) on the map, with the ROI term `roi_mode`:
  "target" (default): FL(map, M x ROI), so the map is pushed to 0 outside the ROI even on a synthetic mark
  (the paper's Fig. 3 and section 4.2; the only reading that teaches "a mark outside the AOI is not a defect");
  "prediction": FL(sigmoid(map) x ROI, M), the paper's eq. 5-6 (no gradient outside the ROI);
  "none": FL(map, M), no ROI term (the ablation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from onen.train.config import ROI_MODES, GRDNetWeights
from onen.train.losses import focal_loss_with_logits
from onen.train.ssim import ssim_loss

_EPS = 1e-6


def contextual_loss(target: torch.Tensor, reconstruction: torch.Tensor, weights: GRDNetWeights) -> dict:
    """{'l1', 'ssim', 'contextual'}: L1 and 1 - SSIM between the clean image and its reconstruction."""
    l1 = F.l1_loss(reconstruction, target)
    structural = ssim_loss(reconstruction, target)
    return {"l1": l1, "ssim": structural, "contextual": weights.l1 * l1 + weights.ssim * structural}


def generator_loss(
    target: torch.Tensor,
    reconstruction: torch.Tensor,
    z: torch.Tensor,
    z_hat: torch.Tensor,
    real_features: torch.Tensor,
    fake_features: torch.Tensor,
    weights: GRDNetWeights,
) -> dict:
    """L_gan and its parts (tensors): 'adversarial', 'l1', 'ssim', 'contextual', 'encoder', 'total'."""
    parts = contextual_loss(target, reconstruction, weights)
    parts["adversarial"] = F.mse_loss(fake_features, real_features.detach())
    parts["encoder"] = F.mse_loss(z_hat, z)
    parts["total"] = (
        weights.adversarial * parts["adversarial"]
        + weights.contextual * parts["contextual"]
        + weights.encoder * parts["encoder"]
    )
    return parts


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """0.5 * (BCE(real, 1) + BCE(fake, 0)) over the patch logits."""
    real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return 0.5 * (real + fake)


def roi_focal_loss(
    map_logits: torch.Tensor, mask: torch.Tensor, roi: torch.Tensor, roi_mode: str = "target", gamma: float = 2.0
) -> torch.Tensor:
    """The U-Net's focal loss, mean over pixels. map_logits [N,1,H,W]; mask and roi [N,H,W] or [N,1,H,W] in 0..1;
    mask holds every synthetic mark, inside the ROI or not: the ROI term decides which count."""
    mask = mask.reshape(map_logits.shape).to(map_logits.dtype)
    roi = roi.reshape(map_logits.shape).to(map_logits.dtype)
    if roi_mode == "target":
        return focal_loss_with_logits(map_logits, mask * roi, gamma)
    if roi_mode == "none":
        return focal_loss_with_logits(map_logits, mask, gamma)
    if roi_mode == "prediction":  # eq. 5-6: I = A x ROI, FL(I, M) on probabilities
        intersection = torch.sigmoid(map_logits) * roi
        p_t = intersection * mask + (1 - intersection) * (1 - mask)
        return (-((1 - p_t) ** gamma) * torch.log(p_t.clamp(min=_EPS))).mean()
    raise ValueError(f"roi_mode must be one of {', '.join(ROI_MODES)}, got {roi_mode!r}")
