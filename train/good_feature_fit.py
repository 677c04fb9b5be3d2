"""Fit the student's model of good parts (train.models.good_features) after training.

Two passes, no gradients: the Gaussians from the good training images (real ones: no synthetic defects, no
flips), then each signal's median and spread from held-out good images, because a Gaussian is closer to the
images it was fitted on than to new ones. With fewer than MIN_HELD_OUT held-out good images the training
images serve for both (the spread is then too small, which calibration on the station corrects anyway).
"""

from __future__ import annotations

import logging

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from onen.edge.errors import OnenError
from onen.train import distributed
from onen.train.models.onen_vit import OneNStudent

log = logging.getLogger(__name__)
MIN_HELD_OUT = 8


@torch.no_grad()
def _features(model: OneNStudent, dataset, batch_size: int, device: torch.device, desc: str):
    """Stem features, tokens (as maps), raw score logits and map-logit peaks of a data set's images."""
    h, w = model.cfg.grid
    stems, tokens, scores, peaks = [], [], [], []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    for batch in tqdm(loader, desc=desc, unit="batch", leave=False):
        out = model(batch["image"].to(device))
        n = out.tokens.shape[0]
        stems.append(out.stem_features.cpu())
        tokens.append(out.tokens.transpose(1, 2).reshape(n, -1, h, w).cpu())
        scores.append(out.score_logit.cpu())
        peaks.append(out.map_logits.flatten(1).amax(dim=1).cpu())
    return torch.cat(stems), torch.cat(tokens), torch.cat(scores), torch.cat(peaks)


@torch.no_grad()
def fit_good_features(model: OneNStudent, good_train, good_held_out, batch_size: int, device: torch.device) -> dict:
    """Fit model.good_features on good images (datasets of InspectionDataset items); returns what was fitted."""
    good = model.good_features
    if good is None:
        raise OnenError("this student has no good-feature model (OneNConfig.good_features is off)")
    if len(good_train) < 2:
        raise OnenError(f"fitting the good-feature model needs at least 2 good training images, got {len(good_train)}")
    was_training = model.training
    model.eval()
    good.is_fitted = False  # raw student outputs while fitting
    try:
        # in a job of several ranks each computes its shard's features and every rank fits on all of them
        stem, tokens, _, _ = distributed.sharded(_features, model, good_train, batch_size, device, "good features: fit")
        good.stem.fit(stem)
        good.tokens.fit(tokens)
        del stem, tokens
        held_out = good_held_out if len(good_held_out) >= MIN_HELD_OUT else good_train
        stem, tokens, scores, peaks = distributed.sharded(
            _features, model, held_out, batch_size, device, "good features: normalise"
        )
        stem_peak = good.stem.distance(stem.to(device)).flatten(1).amax(dim=1)
        token_peak = good.tokens.distance(tokens.to(device)).flatten(1).amax(dim=1)
        for index, values in (
            (good.STEM, stem_peak),
            (good.TOKENS, token_peak),
            (good.SCORE, scores),
            (good.MAP, peaks),
        ):
            good.normaliser.fit(index, values)
        good.mark_fitted()
    finally:
        model.train(was_training)
    summary = {
        "train_images": len(good_train),
        "held_out_images": len(held_out),
        "held_out_is_train": held_out is good_train,
        "location": good.normaliser.location.tolist(),
        "spread": good.normaliser.spread.tolist(),
    }
    log.info("good-feature model fitted on %d good images, normalised on %d", len(good_train), len(held_out))
    return summary
