"""`onen train`: teacher then OneN student on a data set, into a run directory (resumable)."""

from __future__ import annotations

import argparse
from pathlib import Path

from onen.edge.errors import OnenError
from onen.train.geometry import DEFAULT_SIZE
from onen.train.runs import FAMILIES
from onen.train.tiling import DEFAULT_OVERLAP, TILES_OFF


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train the teacher and the OneN student (or GRD-Net) on a data set",
        description="Fine-tunes the EfficientNet-Lite0 teacher (CEOD where an AOI/mask exists), then distils the OneN "
        "student under --supervision none (good images + synthetic defects), weak (image labels; teacher "
        "Grad-CAM as map targets) or full (pixel masks). --family grdnet trains GRD-Net instead (supervision none). "
        "Checkpoints every epoch; --resume continues.",
    )
    parser.add_argument(
        "--data", required=True, type=Path, help="data set: MVTec folder, class folders, or CSV manifest"
    )
    parser.add_argument("--supervision", required=True, choices=("none", "weak", "full"))
    parser.add_argument(
        "--family",
        choices=FAMILIES,
        default=FAMILIES[0],
        help="onen: teacher + OneN student (default); grdnet: GRD-Net (generator, discriminator, U-Net; seed 002) "
        "from good images with synthetic defects, --supervision none",
    )
    parser.add_argument(
        "--roi-mode",
        help="--family grdnet: how the U-Net's focal loss uses the AOI (train.losses_grdnet): target (a mark outside "
        "it is pushed to 0; the default), prediction (the paper's eq. 5-6) or none",
    )
    parser.add_argument(
        "--out", required=True, type=Path, help="run directory to create (or to continue with --resume)"
    )
    parser.add_argument(
        "--epochs",
        type=int,
        help="student epochs (default 30; GRD-Net: 25; with --resume: the run's own)",
    )
    parser.add_argument(
        "--teacher-epochs", type=int, default=8, help="teacher fine-tuning epochs (0: no teacher; default 8)"
    )
    parser.add_argument(
        "--teacher-freeze-blocks",
        type=int,
        default=10,
        help="teacher: stem + this many leading Lite0 blocks stay frozen (0: fine-tune all; default 10)",
    )
    parser.add_argument(
        "--size",
        default=DEFAULT_SIZE,
        help="model input: 'auto' (aspect ratio and resolution from the training images and their masks; default), "
        "a square size (128) or HEIGHTxWIDTH (512x192), multiples of --patch",
    )
    parser.add_argument(
        "--tiles",
        default=TILES_OFF,
        help="train on ROWSxCOLS tiles of the --size input (e.g. 2x5) for parts much larger than one model input: "
        "the bundle still takes the whole image, runs its tiles as one batch, stitches the map and scores the worst "
        "tile; 'auto' tiles when the part's resolution needs more than the pixel budget of one input; needs pixel "
        "masks or --supervision none (default off)",
    )
    parser.add_argument(
        "--tile-overlap",
        type=int,
        default=DEFAULT_OVERLAP,
        help=f"px shared by neighbouring tiles, their maps averaged there (default {DEFAULT_OVERLAP})",
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--lr",
        type=float,
        help="learning rate: the student's (AdamW, one-cycle; default 1e-3) or GRD-Net's (Adam; default 1e-4)",
    )
    parser.add_argument("--aoi", type=Path, help="one AOI mask for the whole data set")
    parser.add_argument("--no-aoi-guidance", action="store_true", help="do not penalise attention outside the AOI")
    parser.add_argument("--aoi-weight", type=float, default=0.2, help="weight of the AOI guidance loss (default 0.2)")
    parser.add_argument(
        "--aoi-peak-weight",
        type=float,
        default=3.0,
        help="weight of the map's peak outside the AOI, part of the AOI guidance (default 3)",
    )
    parser.add_argument(
        "--outside-marks",
        type=float,
        default=1.0,
        help="part of the AOI guidance: this share of training images also gets a synthetic mark outside its "
        "AOI, still labelled as it was (default 1; needs an AOI that leaves an outside)",
    )
    parser.add_argument("--teacher-loss", choices=("ce", "ceod"), default="ceod")
    parser.add_argument(
        "--no-distill", action="store_true", help="train the student without the teacher's logits/features"
    )
    parser.add_argument("--patch", type=int, default=16, help="student token stride in px (8 or 16)")
    parser.add_argument("--dim", type=int, default=96)
    parser.add_argument("--depth", type=int, default=3, help="student transformer blocks (default 3)")
    parser.add_argument(
        "--stem",
        choices=("lite0", "conv"),
        default="lite0",
        help="student stem: ImageNet-pretrained Lite0 layers (default) or convs from scratch",
    )
    parser.add_argument(
        "--no-fine-map",
        action="store_true",
        help="student map from the token grid only (default: refined on the stem's stride-4 features)",
    )
    parser.add_argument(
        "--class-pool",
        choices=("cls", "cls+map", "cls+map+fine"),
        default="cls+map+fine",
        help="student class head reads the CLS token, + patch tokens pooled where the map is bright (cls+map), "
        "+ the stride-4 stem features pooled there too (cls+map+fine, default)",
    )
    parser.add_argument(
        "--map-gate",
        type=float,
        default=0.25,
        help="exported map = map * score ** MAP_GATE: parts the score calls good get a dimmer map "
        "(default 0.25, chosen on validation; 0: the map alone)",
    )
    parser.add_argument(
        "--map-balance",
        choices=("batch", "image", "none"),
        default="batch",
        help="final map loss: defect and other pixels balanced over the batch (every defect pixel counts "
        "alike, as in pixel AUROC; default), per image (small defects weigh as much as large), or not",
    )
    parser.add_argument(
        "--kd-weight", type=float, default=0.5, help="weight of the teacher-logit distillation (default 0.5)"
    )
    parser.add_argument("--kd-temperature", type=float, default=2.0, help="distillation temperature (default 2)")
    parser.add_argument(
        "--good-features",
        choices=("auto", "on", "off"),
        default="auto",
        help="student carries Gaussians of good parts' features at every position, fitted after training, "
        "whose distances join the score and map (auto: on under --supervision none; default)",
    )
    parser.add_argument(
        "--distill-features",
        choices=("auto", "head", "imagenet"),
        default="auto",
        help="what the student's tokens learn from: the fine-tuned teacher's last features (head) or the frozen "
        "ImageNet Lite0's stride-16 features (imagenet); auto: imagenet under --supervision none (default)",
    )
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--test-fraction", type=float, default=0.25)
    parser.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda, cuda:1 ...")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(handler=run)


def _grdnet_settings(args: argparse.Namespace) -> dict:
    """The GRD-Net recipe's values given on the command line (train.grdnet_training.GRDNetRecipe; others: defaults)."""
    if args.family != "grdnet":
        if args.roi_mode is not None:
            raise OnenError("--roi-mode is GRD-Net's: it needs --family grdnet")
        return {}
    settings: dict = {}
    if args.roi_mode is not None:
        settings["weights"] = {"roi_mode": args.roi_mode}
    if args.lr is not None:
        settings["optimiser"] = {"lr": args.lr}
    return settings


def run(args: argparse.Namespace) -> int:
    from onen.train.student_objective import ObjectiveWeights
    from onen.train.trainer import TrainConfig, default_epochs, train

    cfg = TrainConfig(
        data=str(args.data),
        out=str(args.out),
        supervision=args.supervision,
        family=args.family,
        grdnet=_grdnet_settings(args),
        size=args.size,
        tiles=args.tiles,
        tile_overlap=args.tile_overlap,
        epochs=args.epochs or default_epochs(args.family),
        epochs_given=args.epochs is not None,
        teacher_epochs=args.teacher_epochs,
        teacher_freeze_blocks=args.teacher_freeze_blocks,
        batch_size=args.batch_size,
        lr=args.lr if args.lr is not None and args.family == "onen" else TrainConfig.lr,  # GRD-Net's: its recipe
        seed=args.seed,
        aoi=str(args.aoi) if args.aoi else None,
        aoi_guidance=not args.no_aoi_guidance,
        outside_marks=args.outside_marks,
        teacher_loss=args.teacher_loss,
        distill=not args.no_distill,
        test_fraction=args.test_fraction,
        val_fraction=args.val_fraction,
        patch=args.patch,
        dim=args.dim,
        depth=args.depth,
        stem=args.stem,
        fine_map=not args.no_fine_map,
        class_pool=args.class_pool,
        map_gate=args.map_gate,
        good_features=args.good_features,
        distill_features=args.distill_features,
        device=args.device,
        weights=ObjectiveWeights(
            aoi=args.aoi_weight,
            aoi_peak=args.aoi_peak_weight,
            kd=args.kd_weight,
            temperature=args.kd_temperature,
            balanced_maps=args.map_balance,
        ),
    )
    run_dir = train(cfg, resume=args.resume)
    print(f"run written to {run_dir}")
    return 0
