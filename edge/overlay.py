"""A picture of what the model saw: the anomaly map as a heat map over the frame, regions boxed.

Used for the optional overlay topic and for the defect archive, so a person reviewing a rejected part
sees the same thing the line decided on. Labelled like Frigate's snapshots: a banner with verdict,
calibrated score and class, and each region's box with its peak.
"""

from __future__ import annotations

import cv2
import numpy as np

from onen.edge.postprocess import Inspection
from onen.edge.regions import Region


def inspection_label(inspection: Inspection) -> str:
    """Banner text: verdict, calibrated score against the 0.5 decision, class."""
    probability = "" if inspection.class_probability is None else f" {inspection.class_probability:.2f}"
    return (
        f"{inspection.verdict.upper()} {inspection.score:.3f}/{inspection.threshold:.2f} "
        f"{inspection.class_name}{probability} regions {len(inspection.regions)}"
    )


def render_overlay(
    frame_rgb: np.ndarray,
    anomaly_map: np.ndarray,
    regions: list[Region],
    alpha: float = 0.45,
    label: str | None = None,
    defect: bool = False,
) -> np.ndarray:
    """BGR image (ready for cv2.imencode) of the frame with the map blended in, region boxes drawn and
    labelled, and `label` in a banner at the top (red for a defect, green for ok)."""
    height, width = frame_rgb.shape[:2]
    heat = cv2.resize(
        np.clip(anomaly_map, 0.0, 1.0).astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR
    )
    colour = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)
    frame_bgr = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR)
    blended = cv2.addWeighted(frame_bgr, 1.0 - alpha, colour, alpha, 0.0)
    thickness = max(1, round(min(width, height) / 200))
    for region in regions:
        x, y, w, h = region.bbox
        cv2.rectangle(blended, (x, y), (x + w - 1, y + h - 1), (255, 255, 255), thickness)
        cv2.putText(
            blended,
            f"{region.peak:.2f}",
            (x, max(10, y - 3)),
            cv2.FONT_HERSHEY_SIMPLEX,
            max(0.3, min(width, height) / 600),
            (255, 255, 255),
            1,
            cv2.LINE_AA,
        )
    if label:
        scale = max(0.35, min(width, height) / 500)
        (_, text_h), baseline = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        banner_h = text_h + baseline + 6
        cv2.rectangle(blended, (0, 0), (width - 1, banner_h), (0, 0, 200) if defect else (0, 140, 0), -1)
        cv2.putText(blended, label, (3, text_h + 3), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return blended


def encode_jpeg(image_bgr: np.ndarray, quality: int = 85) -> bytes:
    ok, data = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("OpenCV could not encode the overlay as JPEG")
    return data.tobytes()
