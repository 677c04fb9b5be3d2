"""Cameras: one thread per camera delivering really captured RGB frames (see edge.cameras.camera)."""

from onen.edge.cameras.camera import Camera, open_camera
from onen.edge.cameras.frame import Frame, FrameQueue
from onen.edge.cameras.sources import CameraError, opencv_has_gstreamer

__all__ = ["Camera", "CameraError", "Frame", "FrameQueue", "open_camera", "opencv_has_gstreamer"]
