"""The data contract between the readers and everything that trains or evaluates.

Every reader (MVTec layout, class folders, CSV manifest) produces a `DataIndex`: a list of samples
that point at files on disk, plus the class names with "good" first. Nothing is decoded here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

GOOD = "good"
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Sample:
    image: Path
    label: int  # 0 good, 1 defect
    class_name: str  # "good" for good parts
    mask: Path | None = None  # pixel mask of the defect (None: not annotated)
    aoi: Path | None = None  # area of interest for this image (None: the index's AOI, or everywhere)
    split: str | None = None  # train / val / test when the source fixes it


@dataclass
class DataIndex:
    samples: list[Sample]
    class_names: list[str]  # class_names[0] == "good"
    source: Path
    aoi: Path | None = None  # one AOI mask for the whole data set
    meta: dict = field(default_factory=dict)

    def class_index(self, name: str) -> int:
        return self.class_names.index(name)

    def with_samples(self, samples: list[Sample]) -> DataIndex:
        return DataIndex(samples, self.class_names, self.source, self.aoi, dict(self.meta))

    def summary(self) -> dict:
        counts: dict[str, int] = {name: 0 for name in self.class_names}
        for sample in self.samples:
            counts[sample.class_name] = counts.get(sample.class_name, 0) + 1
        return {
            "source": str(self.source),
            "images": len(self.samples),
            "per_class": counts,
            "with_mask": sum(1 for s in self.samples if s.mask is not None),
            "aoi": str(self.aoi) if self.aoi else None,
        }
