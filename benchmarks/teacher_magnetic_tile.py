"""Teacher on the magnetic tile defects: EfficientNet-Lite0 fine-tuned with CE vs CEOD (seed 001).

25% stratified held-out test split. Prints per loss: image AUROC of 1 - p(good), accuracy at 0.5,
defect-class accuracy (defective test images, argmax over the defect classes), pixel AUROC of the
exported CAM map against the defect masks, mean overlap distance on defective test images, and the
wall time per epoch on this machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "magnetic_tile"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="magnetic tile folder (class folders)")
    parser.add_argument("--size", type=int, default=160, help="square model input (px)")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--losses", default="ce,ceod", help="comma separated: ce, ceod")
    parser.add_argument("--omega", type=float, default=0.001, help="CEOD weight (paper: 0.001)")
    parser.add_argument(
        "--freeze-blocks",
        type=int,
        default=10,
        help="frozen leading MBConv blocks (10: last 19 conv layers train, ~seed 001's 20; 0: all)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--limit", type=int, default=0, help="at most this many images per class (0: all)")
    parser.add_argument(
        "--out", type=Path, default=Path("runs/bench-teacher-magnetic-tile"), help="checkpoints (a rerun resumes)"
    )


def _limit(index, per_class: int, seed: int):
    import numpy as np

    if per_class <= 0:
        return index
    rng = np.random.default_rng(seed)
    kept = []
    for name in index.class_names:
        members = [s for s in index.samples if s.class_name == name]
        kept += [members[i] for i in sorted(rng.permutation(len(members))[:per_class])]
    return index.with_samples(kept)


def _localisation(model, dataset, omega_eps: float, batch_size: int) -> dict:
    """Pixel AUROC of the exported map and mean OD of the CAM on defective images with masks."""
    import numpy as np
    import torch
    from sklearn.metrics import roc_auc_score
    from torch.utils.data import DataLoader

    from onen.train.losses_ceod import overlap_distance
    from onen.train.models.efficientnet_lite import TeacherExport

    export = TeacherExport(model).eval()
    maps, masks, ods = [], [], []
    with torch.no_grad():
        for batch in DataLoader(dataset, batch_size=batch_size, generator=torch.Generator()):
            score, anomaly_map, _ = export(batch["image"])
            keep = batch["has_mask"]
            maps.append(anomaly_map[keep, 0].numpy().astype(np.float32).ravel())
            masks.append(batch["mask"][keep].numpy().astype(np.uint8).ravel())
            defective = keep & (batch["label"] == 1)
            if defective.any():
                cam = anomaly_map[defective, 0] / score[defective].clamp_min(1e-6)[:, None, None]
                ods.append(overlap_distance(cam.clamp(0, 1), batch["mask"][defective], omega_eps))
    y, s = np.concatenate(masks), np.concatenate(maps)
    return {
        "pixel_auroc": float(roc_auc_score(y, s)) if 0 < y.sum() < y.size else None,
        "mean_od_defective": float(torch.cat(ods).mean()) if ods else None,
    }


def main(args: argparse.Namespace) -> int:
    import torch

    from onen.train.data.dataset import InspectionDataset
    from onen.train.data.readers import load_index
    from onen.train.data.splits import stratified_split
    from onen.train.teacher_training import TeacherConfig, fit_teacher, predict, teacher_metrics

    torch.set_num_threads(args.threads)
    index = _limit(load_index(args.data), args.limit, args.seed)
    splits = stratified_split(index, test_fraction=0.25, seed=args.seed)
    names = index.class_names
    print(
        f"magnetic tile: {len(index.samples)} images, classes {names}; "
        f"train {len(splits.train)}, test {len(splits.test)}; input {args.size}px; {args.threads} threads"
    )
    train_ds = InspectionDataset(splits.train, names, args.size, args.size, augment=True, seed=args.seed, cache=True)
    test_ds = InspectionDataset(splits.test, names, args.size, args.size, seed=args.seed, cache=True)
    started = time.perf_counter()
    for ds in (train_ds, test_ds):
        for i in range(len(ds)):
            ds.load_resized(i)
    print(f"decode + resize of {len(train_ds) + len(test_ds)} images: {time.perf_counter() - started:.1f} s")

    results = {}
    for loss in [x.strip() for x in args.losses.split(",") if x.strip()]:
        cfg = TeacherConfig(
            epochs=args.epochs,
            batch_size=args.batch_size,
            loss=loss,
            omega=args.omega,
            input_height=args.size,
            input_width=args.size,
            seed=args.seed,
            freeze_blocks=args.freeze_blocks,
        )
        tag = f"{args.size}px-freeze{args.freeze_blocks}-seed{args.seed}"
        out_dir = args.out / (f"ceod-omega{args.omega:g}-{tag}" if loss == "ceod" else f"ce-{tag}")
        model = fit_teacher(train_ds, None, len(names), cfg, device="cpu", out_dir=out_dir)
        started = time.perf_counter()
        metrics = teacher_metrics(predict(model, test_ds, batch_size=32, device="cpu"))
        metrics.update(_localisation(model, test_ds, cfg.clip_eps, batch_size=32))
        epoch_seconds = [r["seconds"] for r in model.history]
        metrics.update(
            {
                "epochs": len(model.history),
                "median_epoch_s": statistics.median(epoch_seconds),
                "train_images": len(train_ds),
                "eval_s": time.perf_counter() - started,
                "final_train_loss": model.history[-1]["loss"],
                "final_train_od": model.history[-1]["od"],
            }
        )
        results[loss] = metrics
        print(
            f"[{loss}] " + "  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
        )
    if {"ce", "ceod"} <= results.keys():
        ce, ceod = results["ce"], results["ceod"]
        print(
            "ceod - ce: "
            + "  ".join(
                f"{k}={ceod[k] - ce[k]:+.4f}"
                for k in ("image_auroc", "defect_class_accuracy", "pixel_auroc", "mean_od_defective")
                if ce.get(k) is not None and ceod.get(k) is not None
            )
        )
    if getattr(args, "json", None):
        Path(args.json).write_text(
            json.dumps(
                {"args": {k: str(v) for k, v in vars(args).items() if k != "handler"}, "results": results}, indent=2
            )
        )
    return 0
