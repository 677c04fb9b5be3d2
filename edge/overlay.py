"""A picture of what the model saw: the anomaly map as a heat map over the frame, regions boxed.

Used for the optional overlay topic and for the defect archive, so a person reviewing a rejected part
sees the same thing the line decided on.
"""
from __future__ import annotations

import cv2
import numpy as np

from edge.regions import Region


def render_overlay(frame_rgb: np.ndarray, anomaly_map: np.ndarray, regions: list[Region], alpha: float = 0.45) -> np.ndarray:
    """BGR image (ready for cv2.imencode) of the frame with the map blended in and region boxes drawn."""
    height, width = frame_rgb.shape[:2]
    heat = cv2.resize(np.clip(anomaly_map, 0.0, 1.0).astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)
    frame_bgr = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR)
    blended = cv2.addWeighted(frame_bgr, 1.0 - alpha, colour, alpha, 0.0)
    thickness = max(1, round(min(width, height) / 200))
    for region in regions:
        x, y, w, h = region.bbox
        cv2.rectangle(blended, (x, y), (x + w - 1, y + h - 1), (255, 255, 255), thickness)
    return blended


def encode_jpeg(image_bgr: np.ndarray, quality: int = 85) -> bytes:
    ok, data = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("OpenCV could not encode the overlay as JPEG")
    return data.tobytes()
