"""One GRD-Net training step: the discriminator, then the generator, then the U-Net.

GANs are fragile on small CPU batches, so: the generator learns from feature matching (never the saturating
BCE), the discriminator is frozen and in eval mode while the generator steps, Adam has beta1 0.5, and every
network's gradient norm is clipped. The U-Net reads a detached reconstruction: its loss never reaches the
generator. The step returns the discriminator's loss and mean real/fake outputs so a trainer can log them and
flag "the discriminator won" (`discriminator_won`).

The batch (a dict of tensors, N images of H x W):
- "image":  uint8 [N,H,W,3] RGB, the part with synthetic defects (X_n; a share may be clean)
- "target": uint8 [N,H,W,3] RGB, the same part without them (X)
- "mask":   float [N,H,W] in 0..1, every synthetic mark (inside the AOI or not; the ROI term decides)
- "aoi":    float [N,H,W] in 0..1, the area of interest (the paper's ROI)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from onen.train.config import OptimiserConfig
from onen.train.losses_grdnet import GRDNetWeights, discriminator_loss, generator_loss, roi_focal_loss
from onen.train.models.grdnet_discriminator import GRDNetDiscriminator
from onen.train.models.grdnet_generator import GRDNetConfig, GRDNetGenerator, unit_images
from onen.train.models.unet import UNet

BATCH_KEYS = ("image", "target", "mask", "aoi")
WON_MARGIN = 0.05  # the discriminator won when it calls real images > 1 - this and fakes < this


@dataclass
class GRDNetNets:
    generator: GRDNetGenerator
    discriminator: GRDNetDiscriminator
    unet: UNet

    @classmethod
    def build(cls, cfg: GRDNetConfig | None = None) -> GRDNetNets:
        cfg = cfg or GRDNetConfig()
        return cls(GRDNetGenerator(cfg), GRDNetDiscriminator(cfg), UNet(cfg.unet))


@dataclass
class GRDNetOptimisers:
    generator: torch.optim.Optimizer
    discriminator: torch.optim.Optimizer
    unet: torch.optim.Optimizer
    grad_clip: float

    @classmethod
    def build(cls, nets: GRDNetNets, cfg: OptimiserConfig | None = None) -> GRDNetOptimisers:
        cfg = cfg or OptimiserConfig()

        def adam(net: nn.Module) -> torch.optim.Optimizer:
            return torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))

        return cls(adam(nets.generator), adam(nets.discriminator), adam(nets.unet), cfg.grad_clip)


def _apply(net: nn.Module, optimiser: torch.optim.Optimizer, loss: torch.Tensor, grad_clip: float) -> None:
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
    optimiser.step()


def _value(tensor: torch.Tensor) -> float:
    return float(tensor.detach())


def _check_batch(batch: dict) -> None:
    missing = [key for key in BATCH_KEYS if key not in batch]
    if missing:
        raise KeyError(f"GRD-Net batch lacks {missing}; it needs {list(BATCH_KEYS)} (see train.grdnet_step)")
    if batch["image"].dtype != torch.uint8 or batch["target"].dtype != torch.uint8:
        raise TypeError("GRD-Net batch 'image' and 'target' must be uint8 [N,H,W,3] RGB")


def discriminator_step(
    nets: GRDNetNets, optimisers: GRDNetOptimisers, target: torch.Tensor, reconstruction: torch.Tensor
) -> dict[str, float]:
    """Real (clean) -> 1, fake (detached reconstruction) -> 0."""
    nets.discriminator.train()
    real_logits, _ = nets.discriminator(target)
    fake_logits, _ = nets.discriminator(reconstruction.detach())
    loss = discriminator_loss(real_logits, fake_logits)
    _apply(nets.discriminator, optimisers.discriminator, loss, optimisers.grad_clip)
    return {
        "d_loss": _value(loss),
        "d_real": _value(torch.sigmoid(real_logits).mean()),
        "d_fake": _value(torch.sigmoid(fake_logits).mean()),
    }


def generator_step(
    nets: GRDNetNets,
    optimisers: GRDNetOptimisers,
    target: torch.Tensor,
    outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    weights: GRDNetWeights,
) -> dict[str, float]:
    """L_gan through the frozen discriminator (eval mode, no parameter gradients)."""
    reconstruction, z, z_hat = outputs
    discriminator = nets.discriminator
    discriminator.eval()
    discriminator.requires_grad_(False)
    try:
        with torch.no_grad():
            real_features = discriminator.features(target)
        fake_features = discriminator.features(reconstruction)
        parts = generator_loss(target, reconstruction, z, z_hat, real_features, fake_features, weights)
        _apply(nets.generator, optimisers.generator, parts["total"], optimisers.grad_clip)
    finally:
        discriminator.requires_grad_(True)
        discriminator.train()
    return {f"g_{name}": _value(value) for name, value in parts.items()}


def unet_step(
    nets: GRDNetNets,
    optimisers: GRDNetOptimisers,
    image: torch.Tensor,
    reconstruction: torch.Tensor,
    mask: torch.Tensor,
    aoi: torch.Tensor,
    weights: GRDNetWeights,
) -> dict[str, float]:
    """The focal loss on the map of image + detached reconstruction, with the ROI term."""
    nets.unet.train()
    logits = nets.unet(torch.cat([image, reconstruction.detach()], dim=1))
    loss = roi_focal_loss(logits, mask, aoi, weights.roi_mode, weights.focal_gamma)
    _apply(nets.unet, optimisers.unet, loss, optimisers.grad_clip)
    return {"u_focal": _value(loss)}


def grdnet_step(
    nets: GRDNetNets, optimisers: GRDNetOptimisers, batch: dict, weights: GRDNetWeights | None = None
) -> dict[str, float]:
    """D, then G, then U on one batch (keys in the module docstring); returns every loss and D's mean outputs."""
    weights = weights or GRDNetWeights()
    weights.check()
    _check_batch(batch)
    image, target = unit_images(batch["image"]), unit_images(batch["target"])
    nets.generator.train()
    outputs = nets.generator(image)  # one forward: D reads it detached, G's step backpropagates through it
    logs = discriminator_step(nets, optimisers, target, outputs[0])
    logs.update(generator_step(nets, optimisers, target, outputs, weights))
    logs.update(unet_step(nets, optimisers, image, outputs[0], batch["mask"], batch["aoi"], weights))
    return logs


def discriminator_won(d_real: float, d_fake: float, margin: float = WON_MARGIN) -> bool:
    """True when the discriminator tells real from fake almost perfectly (mean outputs over an epoch): the
    generator then gets little from the adversarial term, and the run should say so."""
    return d_real > 1.0 - margin and d_fake < margin
