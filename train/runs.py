"""A training run on disk: everything needed to evaluate, export or resume it.

RUN_DIR/config.json        TrainConfig + class names + the resolved input geometry (written before training starts)
RUN_DIR/splits.json        the stratified split (train.data.splits)
RUN_DIR/teacher/           the teacher's checkpoints (train.teacher_training)
RUN_DIR/checkpoints/       student_last.pt (every epoch, for --resume), student_best.pt (best validation epoch)
RUN_DIR/student.pt         the student of the last epoch (config + weights)
RUN_DIR/student_best.pt    the student of the best validation epoch: what `onen eval` and `onen export` use
RUN_DIR/history.csv        one row per student epoch: loss parts, validation figures, lr, seconds (+ history.png)
RUN_DIR/summary.json       timings, validation figures, thresholds and their source, the chosen epoch

A run of family grdnet (train.grdnet_training) has no teacher and no student: checkpoints/grdnet_last.pt (the three
networks and their optimisers, for --resume) and grdnet_best.pt, RUN_DIR/grdnet.pt and grdnet_best.pt (generator and
U-Net: what eval and export use), and its figures under summary.json's "grdnet".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onen.edge.errors import OnenError

CONFIG = "config.json"
SPLITS = "splits.json"
STUDENT = "student.pt"
STUDENT_BEST = "student_best.pt"  # also the name of its training checkpoint in CHECKPOINTS
HISTORY = "history.csv"
HISTORY_PLOT = "history.png"
SUMMARY = "summary.json"
GOOD_FEATURES = "good_features.json"  # what the student's good-feature model was fitted on
CHECKPOINTS = "checkpoints"
STUDENT_LAST = "student_last.pt"
TEACHER_DIR = "teacher"
TEACHER_FINAL = "teacher.pt"
GRDNET = "grdnet.pt"  # the GRD-Net of the last epoch
GRDNET_BEST = "grdnet_best.pt"  # ... of the best validation epoch (also its training checkpoint in CHECKPOINTS)
GRDNET_LAST = "grdnet_last.pt"  # in CHECKPOINTS, every epoch, for --resume
# the run's family (config.json; onen: teacher + OneN student, grdnet: train.grdnet_training) -> summary.json key of
# its model, and the bundle manifest's family
MODEL_KEYS = {"onen": "student", "grdnet": "grdnet"}
FAMILIES = tuple(MODEL_KEYS)
BUNDLE_FAMILIES = {"onen": "onen-student", "grdnet": "grdnet"}
# 2: the input geometry (HxW, how it was chosen) replaced the square `size`; 3: images shrink by halvings first
# (edge.images.resize_to_input), so a model of an older run was trained on other pixels
RUN_FORMAT = "onen-run/3"


class RunError(OnenError):
    """A run directory that is missing, incomplete or from another version."""


@dataclass
class RunInfo:
    run_dir: Path
    data: str
    class_names: list[str]
    input_height: int
    input_width: int
    supervision: str
    aoi: Path | None = None
    aoi_guidance: bool = True
    seed: int = 0
    config: dict[str, Any] = field(default_factory=dict)  # the TrainConfig as saved
    summary: dict[str, Any] = field(default_factory=dict)  # summary.json when training finished
    splits: Any = None  # train.data.splits.Splits (loaded lazily by load_run)
    index: Any = None  # train.data.sample.DataIndex

    def whole_frame(self, model):
        """`model` (the run's student or teacher) as it runs on the whole input: tiled when the run trained on tiles
        (config `tile_grid`, train.models.tiled)."""
        from onen.train.models.tiled import whole_frame

        return whole_frame(model, self.config.get("tile_grid"))

    @property
    def family(self) -> str:
        """The run's model family (train.trainer.FAMILIES); runs written before families existed are OneN's."""
        return str(self.config.get("family", "onen"))

    @property
    def model_key(self) -> str:
        """summary.json's key of the model eval and export use: "student" (OneN) or "grdnet"."""
        return MODEL_KEYS[self.family]

    def samples(self, split: str) -> list:
        if self.splits is None:
            raise RunError(f"{self.run_dir}: run has no splits loaded")
        return self.splits[split]

    def thresholds(self, which: str = "student") -> dict[str, Any]:
        """The model's thresholds from summary.json, with their source (edge.bundle.THRESHOLD_SOURCES)."""
        thresholds = self.summary.get(which, {}).get("thresholds", {})
        if "source" not in thresholds:
            raise RunError(
                f"{self.run_dir / SUMMARY}: no {which} thresholds with their source (the run did not finish, or it "
                f"predates threshold sources); `onen train --data {self.data} --out {self.run_dir} --resume` "
                "rewrites it"
            )
        return dict(thresholds)

    def export_info(
        self, name: str | None = None, version: str = "1", family: str | None = None, metrics: dict | None = None
    ):
        """ExportInfo for train.export from what the run knows (thresholds from its validation outputs); family
        defaults to the run's model's (BUNDLE_FAMILIES), "teacher-cnn" exports its teacher."""
        from onen.edge.bundle import ScoreNormalisation, Thresholds
        from onen.train.export import ExportInfo

        family = family or BUNDLE_FAMILIES[self.family]
        which = "teacher" if family == "teacher-cnn" else self.model_key
        own = self.summary.get(which, {})
        thresholds = Thresholds(**self.thresholds(which))
        normalisation = ScoreNormalisation(**own.get("score_normalisation", {}))
        training = {
            "data": self.data,
            "supervision": self.supervision,
            "aoi": str(self.aoi) if self.aoi else None,
            "aoi_guidance": self.aoi_guidance,
            "seed": self.seed,
            "split_counts": self.splits.counts() if self.splits is not None else None,
            "config": self.config,
            "geometry": self.config.get("geometry"),
            "timings_s": self.summary.get("timings_s"),
        }
        if which != "teacher":
            training[f"{which}_checkpoint"] = self.summary.get(f"{which}_checkpoint")
        if self.index is not None:
            training["data_summary"] = self.index.summary()
        run_metrics = {"validation": own.get("validation", {})}
        report = find_eval_report(self.run_dir)
        if report is not None:
            run_metrics["test"] = report
        if metrics:
            run_metrics.update(metrics)
        return ExportInfo(
            name=name or self.run_dir.name,
            version=version,
            family=family,
            class_names=list(self.class_names),
            input_height=self.input_height,
            input_width=self.input_width,
            resize=self.config["geometry"]["resize"],
            training=training,
            metrics=run_metrics,
            thresholds=thresholds,
            score_normalisation=normalisation,
        )


def find_eval_report(run_dir: Path) -> dict | None:
    """The report.json of `onen eval` when it was written inside the run (RUN_DIR/eval*/report.json)."""
    for path in sorted(Path(run_dir).glob("eval*/report.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        keys = (
            "image_auroc",
            "pixel_auroc",
            "aupro",
            "f1",
            "accuracy",
            "class_accuracy",
            "threshold",
            "threshold_source",
        )
        return {k: data.get(k) for k in keys if k in data} | {"report": str(path)}
    return None


def write_json(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)
    return path


def read_config(run_dir: Path) -> dict:
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise RunError(f"{run_dir}: not a training run (no {CONFIG}); expected the --out directory of `onen train`")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise RunError(f"{path}: invalid JSON at line {error.lineno}: {error.msg}") from error


def check_format(config: dict, source: str) -> None:
    """Refuse a run of another format: rebuilding an old run through guesses would train or export a model that
    differs from the one that was measured."""
    found = config.get("format", "onen-run/1")
    if found != RUN_FORMAT:
        raise RunError(
            f"{source}: run format '{found}', this onen reads '{RUN_FORMAT}' (the input geometry and the resize "
            "changed, so its model was trained on other pixels); "
            "train the run again with this version"
        )


def refuse_unknown(data: dict, known: set[str], source: str, prefix: str = "") -> None:
    """Refuse keys this version does not know: a run written by another version would otherwise load half-read."""
    unknown = sorted(set(data) - known)
    if unknown:
        raise RunError(
            f"{source}: unknown key(s) {', '.join(prefix + k for k in unknown)}; expected {', '.join(sorted(known))} "
            "(a run of another onen version? train it again with this version)"
        )


def load_run(run_dir: str | Path, with_data: bool = True) -> RunInfo:
    """RunInfo of a run; with_data also reads the data index and the saved split."""
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    from onen.train.config import TrainConfig

    TrainConfig.from_dict(config, str(run_dir / CONFIG))  # refuses another format and unknown keys
    for key in ("data", "class_names", "geometry", "supervision"):
        if key not in config:
            raise RunError(f"{run_dir / CONFIG}: missing key '{key}'")
    summary_path = run_dir / SUMMARY
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    info = RunInfo(
        run_dir=run_dir,
        data=config["data"],
        class_names=list(config["class_names"]),
        input_height=int(config["geometry"]["height"]),
        input_width=int(config["geometry"]["width"]),
        supervision=config["supervision"],
        aoi=Path(config["aoi"]) if config.get("aoi") else None,
        aoi_guidance=bool(config.get("aoi_guidance", True)),
        seed=int(config.get("seed", 0)),
        config=config,
        summary=summary,
    )
    if with_data:
        from onen.train.data.readers import load_index
        from onen.train.data.splits import Splits

        info.index = load_index(info.data, info.aoi)
        if list(info.index.class_names) != info.class_names:
            raise RunError(f"{info.data}: classes {info.index.class_names} differ from the run's {info.class_names}")
        info.splits = Splits.load(run_dir / SPLITS, info.index)
    return info


def load_student(run_dir: str | Path, checkpoint: str = STUDENT_BEST):
    """The run's student in eval mode: by default the best validation epoch's (STUDENT for the last epoch's)."""
    import torch

    from onen.train.models.onen_vit import OneNConfig, OneNStudent

    path = Path(run_dir) / checkpoint
    if not path.is_file():
        raise RunError(
            f"{path}: no trained student (training did not finish, or the run predates {STUDENT_BEST}? run "
            "`onen train --data DATA --out RUN_DIR --resume`)"
        )
    state = torch.load(path, map_location="cpu", weights_only=False)
    model = OneNStudent(OneNConfig.from_dict(state["model_config"], f"{path}: model_config"))
    model.load_state_dict(state["model"])
    return model.eval()


def load_grdnet(run_dir: str | Path, checkpoint: str = GRDNET_BEST):
    """The run's GRD-Net as its bundle model (train.models.grdnet_export.GRDNetExport) in eval mode: by default the
    best validation epoch's (GRDNET for the last epoch's)."""
    import torch

    from onen.train.models.grdnet_export import GRDNetExport
    from onen.train.models.grdnet_generator import GRDNetConfig, GRDNetGenerator
    from onen.train.models.unet import UNet

    path = Path(run_dir) / checkpoint
    if not path.is_file():
        raise RunError(
            f"{path}: no trained GRD-Net (training did not finish? run `onen train --data DATA --out RUN_DIR --resume`)"
        )
    state = torch.load(path, map_location="cpu", weights_only=False)
    cfg = GRDNetConfig(**state["model_config"])
    generator, unet = GRDNetGenerator(cfg), UNet(cfg.unet)
    generator.load_state_dict(state["generator"])
    unet.load_state_dict(state["unet"])
    return GRDNetExport(generator, unet, int(state["num_classes"])).eval()


def load_model(run_dir: str | Path):
    """The run's model as eval and export use it, for its family: the OneN student or the GRD-Net."""
    family = read_config(Path(run_dir)).get("family", "onen")
    if family not in MODEL_KEYS:
        raise RunError(f"{Path(run_dir) / CONFIG}: family '{family}', expected one of {', '.join(MODEL_KEYS)}")
    return load_grdnet(run_dir) if family == "grdnet" else load_student(run_dir)


def load_teacher(run_dir: str | Path):
    """The run's fine-tuned teacher (EfficientNetLite) in eval mode."""
    import torch

    from onen.train.models.efficientnet_lite import build_teacher

    path = Path(run_dir) / TEACHER_DIR / TEACHER_FINAL
    if not path.is_file():
        raise RunError(f"{path}: this run has no trained teacher")
    state = torch.load(path, map_location="cpu", weights_only=False)
    model = build_teacher(int(state["num_classes"]), pretrained=False)
    model.load_state_dict(state["model"])
    return model.eval()


def load_trained(run_dir: str | Path, with_data: bool = True):
    """(the run's model in eval mode, RunInfo with the data index and splits): what `onen eval` and export need."""
    info = load_run(run_dir, with_data=with_data)
    return load_model(run_dir), info
