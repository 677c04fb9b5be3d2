"""Every `onen train` setting and its default, written once: the run's TrainConfig, the OneN student's objective
weights and the GRD-Net recipe (networks, loss weights, optimiser).

Torch-free, so `onen train --help` stays cheap: the command builds its flags from these fields
(train.commands.train) and recipe files are checked against them (train.recipe_files). A field's metadata says how
it is set: "help" (a command-line flag; "flag" names it when it is not --<field-name>, "choices" lists its values),
"recipe" (a recipe file or --set only) or "internal" (filled in by the trainer, never set by hand).
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any

from onen.edge.errors import OnenError
from onen.train import runs
from onen.train.geometry import DEFAULT_SIZE, parse_size
from onen.train.tiling import DEFAULT_OVERLAP, TILES_OFF, TileGrid, check_tiles

SUPERVISION = ("none", "weak", "full")
FAMILIES = runs.FAMILIES
STEMS = ("lite0", "conv")
PATCHES = (8, 16)  # the student's token stride: both keep the stride-4 stem features its fine map reads
ROI_MODES = ("target", "prediction", "none")  # train.losses_grdnet.roi_focal_loss
GRDNET_DOWNSAMPLE = 16  # GRD-Net's four stride-2 stages: the bottleneck is H/16 x W/16
GRDNET_STAGES = 4


def option(default: Any = dataclasses.MISSING, help: str = "", **meta: Any) -> Any:
    """A field with a command-line flag (meta: flag, choices, factory, required)."""
    factory = meta.pop("factory", None)
    metadata = {"help": help, **meta}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def recipe(default: Any = dataclasses.MISSING, factory: Any = None, **meta: Any) -> Any:
    """A field set only by a recipe file or --set (no flag: few runs change it)."""
    if factory is not None:
        return field(default_factory=factory, metadata={"recipe": True, **meta})
    return field(default=default, metadata={"recipe": True, **meta})


def internal(why: str, default: Any = dataclasses.MISSING, factory: Any = None) -> Any:
    """A field the trainer fills in (refused in a recipe file)."""
    if factory is not None:
        return field(default_factory=factory, metadata={"internal": why})
    return field(default=default, metadata={"internal": why})


# ------------------------------------------------------------------------------------------ OneN objective
@dataclass
class ObjectiveWeights:
    """The OneN student's loss weights (train.student_objective). Measurements behind them: docs/experiments.md."""

    image: float = recipe(1.0)
    classes: float = recipe(1.0)
    maps: float = recipe(4.0)
    aoi: float = option(0.2, "weight of the AOI guidance loss", flag="--aoi-weight")
    aoi_peak: float = option(
        3.0, "weight of the map's peak outside the AOI, part of the AOI guidance", flag="--aoi-peak-weight"
    )
    kd: float = option(0.5, "weight of the teacher-logit distillation", flag="--kd-weight")
    feature: float = recipe(0.5)
    temperature: float = option(2.0, "distillation temperature", flag="--kd-temperature")
    focal_gamma: float = recipe(2.0)
    aoi_guidance: bool = internal("TrainConfig.aoi_guidance (TrainConfig.objective_weights)", True)
    defect_class: float = recipe(1.0)
    kd_defect: float = recipe(1.0)
    kd_score: float = recipe(1.0)  # the trainer turns it off for supervision "none" (that teacher never saw a defect)
    class_feature: float = recipe(1.0)  # the class head's input vs the teacher's pooled features

    def to_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------------------------ GRD-Net recipe
@dataclass
class UNetConfig:
    in_channels: int = recipe(6)  # image + reconstruction
    base_width: int = recipe(16)
    depth: int = recipe(4)  # down-sampling steps; H and W must be multiples of 2**depth
    max_width_factor: int = recipe(4)  # widths are base * 2**level, capped at base * this (DRAEM: 8, at base 64)

    def check(self, height: int, width: int) -> None:
        step = 2**self.depth
        if self.depth < 1 or self.base_width < 1:
            raise ValueError(f"U-Net depth and base_width must be >= 1, got {self.depth}, {self.base_width}")
        if height % step or width % step:
            raise ValueError(f"U-Net input {height}x{width} must be a multiple of {step} (2**depth) on both sides")

    def widths(self) -> list[int]:
        return [self.base_width * min(2**level, self.max_width_factor) for level in range(self.depth + 1)]


@dataclass
class GRDNetConfig:
    """The GRD-Net family's networks (generator, discriminator, U-Net)."""

    input_height: int = internal("the run's geometry", 128)
    input_width: int = internal("the run's geometry", 128)
    base_width: int = recipe(16)  # channels of the first encoder stage; each stage doubles them
    latent_channels: int = recipe(32)  # the paper's 32 x 8 x 8 bottleneck at 128 px
    unet: UNetConfig = recipe(factory=UNetConfig)

    def __post_init__(self) -> None:
        if isinstance(self.unet, dict):
            self.unet = UNetConfig(**self.unet)

    def check(self) -> None:
        if (
            self.input_height % GRDNET_DOWNSAMPLE
            or self.input_width % GRDNET_DOWNSAMPLE
            or min(self.size) < GRDNET_DOWNSAMPLE
        ):
            raise ValueError(
                f"GRD-Net input {self.input_height}x{self.input_width} must be a positive multiple of "
                f"{GRDNET_DOWNSAMPLE} on both sides (the bottleneck is H/16 x W/16)"
            )
        if self.base_width < 1 or self.latent_channels < 1:
            raise ValueError(
                f"base_width and latent_channels must be >= 1, got {self.base_width}, {self.latent_channels}"
            )
        self.unet.check(self.input_height, self.input_width)

    @property
    def size(self) -> tuple[int, int]:
        return self.input_height, self.input_width

    @property
    def stage_widths(self) -> list[int]:
        return [self.base_width * 2**stage for stage in range(GRDNET_STAGES)]

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class GRDNetWeights:
    """Weights and choices of GRD-Net's losses (paper eq. 3; gamma is focal loss's usual 2)."""

    adversarial: float = recipe(1.0)  # w_adv (omega_1)
    contextual: float = recipe(50.0)  # w_con (omega_2)
    encoder: float = recipe(1.0)  # w_enc (omega_3)
    l1: float = recipe(1.0)  # omega_a inside L_con
    ssim: float = recipe(1.0)  # omega_b inside L_con
    focal_gamma: float = recipe(2.0)
    roi_mode: str = option(
        "target",
        "--family grdnet: how the U-Net's focal loss uses the AOI (train.losses_grdnet): target (a mark outside it "
        "is pushed to 0), prediction (the paper's eq. 5-6) or none",
        flag="--roi-mode",
        choices=ROI_MODES,
    )

    def check(self) -> None:
        if self.roi_mode not in ROI_MODES:
            raise ValueError(f"roi_mode must be one of {', '.join(ROI_MODES)}, got {self.roi_mode!r}")
        for name in ("adversarial", "contextual", "encoder", "l1", "ssim", "focal_gamma"):
            if getattr(self, name) < 0:
                raise ValueError(f"GRD-Net weight {name} must be >= 0, got {getattr(self, name)}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class OptimiserConfig:
    lr: float = recipe(1e-4)  # the paper's learning rate (`onen train --family grdnet --lr` sets it)
    beta1: float = recipe(0.5)  # GANomaly's (DCGAN's) Adam beta1
    beta2: float = recipe(0.999)
    grad_clip: float = recipe(1.0)  # max gradient norm per network


@dataclass
class GRDNetRecipe:
    """GRD-Net's settings in a run (TrainConfig.grdnet as a dict): networks, loss weights, optimiser, and the epoch
    count `onen train --family grdnet` uses when --epochs is not given. The input size is the run's geometry."""

    model: GRDNetConfig = recipe(factory=GRDNetConfig)
    weights: GRDNetWeights = recipe(factory=GRDNetWeights)
    optimiser: OptimiserConfig = recipe(factory=OptimiserConfig)
    epochs: int = recipe(25)  # ~1.3 min per 1,000-image epoch at 128 px here: a run fits a 20-30 min budget

    @classmethod
    def from_dict(cls, data: dict) -> GRDNetRecipe:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            expected = list(cls.__dataclass_fields__)
            raise OnenError(f"GRD-Net settings: unknown keys {sorted(unknown)}, expected {expected}")
        try:
            return cls(
                model=GRDNetConfig(**data.get("model", {})),
                weights=GRDNetWeights(**data.get("weights", {})),
                optimiser=OptimiserConfig(**data.get("optimiser", {})),
                epochs=int(data.get("epochs", cls.epochs)),
            )
        except TypeError as error:
            raise OnenError(f"GRD-Net settings: {error}") from error

    def to_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------------------------ the run
@dataclass
class TrainConfig:
    """One `onen train` run: what config.json holds (with `format`), and the source of every flag's default."""

    data: str = option(help="data set: MVTec folder, class folders, or CSV manifest", required=True)
    out: str = option(help="run directory to create (or to continue with --resume)", required=True)
    supervision: str = option(
        "full",
        "none (good images + synthetic defects), weak (image labels; teacher Grad-CAM as map targets) or full "
        "(pixel masks)",
        choices=SUPERVISION,
        required=True,
    )
    family: str = option(
        FAMILIES[0],
        "onen: teacher + OneN student; grdnet: GRD-Net (generator, discriminator, U-Net; seed 002) from good images "
        "with synthetic defects, --supervision none",
        choices=FAMILIES,
    )
    grdnet: dict = field(
        default_factory=dict, metadata={"nested": GRDNetRecipe}
    )  # family grdnet: GRDNetRecipe as a dict, only the keys set (its defaults fill the rest)
    size: str = option(
        DEFAULT_SIZE,
        "model input: 'auto' (aspect ratio and resolution from the training images and their masks), a square size "
        "(128) or HEIGHTxWIDTH (512x192), multiples of --patch",
    )
    epochs: int = option(30, "student epochs (GRD-Net: its recipe's, 25; with --resume: the run's own)")
    teacher_epochs: int = option(8, "teacher fine-tuning epochs (0: no teacher)")
    teacher_freeze_blocks: int = option(
        10, "teacher: stem + this many leading Lite0 blocks stay at ImageNet weights (0: fine-tune all)"
    )
    batch_size: int = option(16, "images per step")
    lr: float = option(
        1e-3, "learning rate: the student's (AdamW, one-cycle) or, given, GRD-Net's (Adam; its recipe's: 1e-4)"
    )
    weight_decay: float = recipe(0.05)
    seed: int = option(0, "seed of the split, synthetic defects, initialisation and loader")
    aoi: str | None = option(None, "one AOI mask for the whole data set")
    aoi_guidance: bool = option(True, "penalise attention and map outside the AOI", flag="--no-aoi-guidance")
    test_fraction: float = option(0.25, "share of the data set held out as the test split")
    val_fraction: float = option(0.1, "share of the data set held out as the validation split")
    synthetic_probability: float = recipe(0.5)
    outside_marks: float = option(
        1.0,
        "part of the AOI guidance: this share of training images also gets a synthetic mark outside its AOI, still "
        "labelled as it was (needs an AOI that leaves an outside)",
    )
    sensor_noise: float = option(
        0.0,
        "training images (teacher and student) get Gaussian sensor noise of a sigma drawn from 0 to this many grey "
        "levels (train.repeatability's noise model), so a verdict holds under the camera's own noise",
    )
    patch: int = option(16, "student token stride in px (8 or 16)")
    dim: int = option(96, "student token width")
    depth: int = option(3, "student transformer blocks")
    heads: int = recipe(4)
    stem: str = option(
        "lite0",
        "student stem: ImageNet-pretrained Lite0 layers, or convs from scratch (small and quick: train.recipes)",
        choices=STEMS,
    )
    device: str = option("auto", "auto (CUDA when present, else CPU), cpu, cuda, cuda:1 ...")
    nproc: int = option(
        1,
        "local processes (ranks) training as one job with DistributedDataParallel (train.distributed; nccl on GPUs, "
        "one GPU per rank, else gloo); --batch-size counts the images of a step over all ranks; under torchrun "
        "leave it at 1",
    )
    weights: ObjectiveWeights = field(default_factory=ObjectiveWeights, metadata={"nested": ObjectiveWeights})
    tiles: str = option(
        TILES_OFF,
        "train on ROWSxCOLS tiles of the --size input (e.g. 2x5) for parts much larger than one model input: the "
        "bundle still takes the whole image, runs its tiles as one batch, stitches the map and scores the worst tile; "
        "'auto' tiles when the part's resolution needs more than the pixel budget of one input; needs pixel masks or "
        "--supervision none",
    )
    tile_overlap: int = option(DEFAULT_OVERLAP, "px shared by neighbouring tiles, their maps averaged there")
    class_names: list[str] = internal("read from the data set", factory=list)
    epochs_given: bool = internal("False: --resume keeps the run's saved epoch count", True)
    geometry: dict = internal("train.geometry.Geometry, resolved from `size` before training", factory=dict)
    tile_grid: dict | None = internal("train.tiling.TileGrid, resolved with the geometry (None: no tiling)", None)

    @property
    def input_height(self) -> int:
        return int(self.geometry["height"])

    @property
    def input_width(self) -> int:
        return int(self.geometry["width"])

    def grid(self) -> TileGrid | None:
        return TileGrid.from_dict(self.tile_grid) if self.tile_grid else None

    @property
    def model_height(self) -> int:
        """The networks' own input: a tile's with tiling, else the whole input's."""
        grid = self.grid()
        return grid.tile_height if grid else self.input_height

    @property
    def model_width(self) -> int:
        grid = self.grid()
        return grid.tile_width if grid else self.input_width

    def check(self) -> None:
        if self.supervision not in SUPERVISION:
            raise OnenError(f"--supervision must be one of {', '.join(SUPERVISION)}, got '{self.supervision}'")
        if self.family not in FAMILIES:
            raise OnenError(f"--family must be one of {', '.join(FAMILIES)}, got '{self.family}'")
        if self.family == "grdnet":
            check_grdnet_config(self)
        if self.family == "onen" and self.patch not in PATCHES:
            raise OnenError(f"--patch must be one of {', '.join(map(str, PATCHES))}, got {self.patch}")
        parse_size(self.size, self.patch)
        check_tiles(self.tiles, self.supervision, self.tile_overlap)
        if self.epochs < 1:
            raise OnenError(f"--epochs must be >= 1, got {self.epochs}")
        if self.nproc < 1 or self.batch_size % self.nproc:
            raise OnenError(
                f"--nproc {self.nproc}: must be >= 1 and divide --batch-size {self.batch_size} (the images of one step "
                "over all ranks)"
            )
        if not 0 <= self.outside_marks <= 1:
            raise OnenError(
                f"--outside-marks must be between 0 and 1 (a share of the training images), got {self.outside_marks}"
            )
        if not 0 <= self.sensor_noise <= 25:
            raise OnenError(
                f"--sensor-noise must be between 0 and 25 grey levels (a sigma, of 255), got {self.sensor_noise}"
            )
        if self.supervision == "weak" and self.teacher_epochs < 1:
            raise OnenError(
                "--supervision weak needs a teacher (its Grad-CAM gives the map targets); use --teacher-epochs >= 1"
            )

    def objective_weights(self) -> ObjectiveWeights:
        """The student's objective as this run trains it: the configured weights, the AOI guidance switch, and no
        score distillation under supervision none (that teacher never saw a real defect, so its defect
        probability is no target for the score)."""
        return dataclasses.replace(
            self.weights,
            aoi_guidance=self.aoi_guidance,
            kd_score=0.0 if self.supervision == "none" else self.weights.kd_score,
        )

    def uses_good_features(self) -> bool:
        """Whether the student carries the good-feature model (train.models.good_features): under supervision none,
        where it lifts the image AUROC; under weak and full real defects teach the score."""
        return self.supervision == "none"

    def distils_imagenet_features(self) -> bool:
        """Whether the student's tokens learn the frozen ImageNet features (train.models.efficientnet_lite
        .ImageNetFeatures) rather than the teacher's: under supervision none, where the features of a teacher
        fine-tuned on synthetic defects are narrower."""
        return self.supervision == "none"

    def to_dict(self) -> dict:
        data = asdict(self)
        data["weights"] = self.weights.to_dict()
        return {"format": runs.RUN_FORMAT, **data}

    @classmethod
    def from_dict(cls, data: dict, source: str = runs.CONFIG) -> TrainConfig:
        """A run's saved config: a run of another format, or an unknown key, is refused by name (no rebuilding of an
        older run through guesses)."""
        runs.check_format(data, source)
        weights = data.get("weights", {})
        runs.refuse_unknown(data, set(cls.__dataclass_fields__) | {"format"}, source)
        runs.refuse_unknown(weights, set(ObjectiveWeights.__dataclass_fields__), source, "weights.")
        settings = {k: v for k, v in data.items() if k not in ("format", "weights")}
        return cls(**settings, weights=ObjectiveWeights(**weights))


def default_epochs(family: str) -> int:
    """Epochs when `--epochs` is not given: TrainConfig's for OneN, the GRD-Net recipe's for GRD-Net."""
    return GRDNetRecipe.epochs if family == "grdnet" else TrainConfig.epochs


def check_grdnet_config(cfg: TrainConfig) -> None:
    """Refuse a TrainConfig that GRD-Net cannot train, before any data is read."""
    if cfg.supervision != "none":
        raise OnenError(
            f"--family grdnet trains from good images with synthetic defects: use --supervision none "
            f"(got --supervision {cfg.supervision}; real defects of the data set still serve its validation and eval)"
        )
    if cfg.tiles != TILES_OFF:
        raise OnenError(f"--family grdnet trains on the whole input: leave --tiles off (got --tiles {cfg.tiles})")
    if cfg.patch % GRDNET_DOWNSAMPLE:
        raise OnenError(
            f"--family grdnet needs an input that is a multiple of {GRDNET_DOWNSAMPLE}: use --patch "
            f"{GRDNET_DOWNSAMPLE} (got --patch {cfg.patch})"
        )
    try:
        GRDNetRecipe.from_dict(cfg.grdnet).weights.check()
    except ValueError as error:
        raise OnenError(f"GRD-Net settings: {error}") from error
