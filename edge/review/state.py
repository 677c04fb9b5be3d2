"""What the review page shows, kept in memory: latest state per station and camera, bounded rolling counters.

Every container is bounded (deques with maxlen, one overlay per camera), so a fast line can never grow the
process; newer messages simply replace older ones (latest wins). `version` increases on every change; the
SSE stream sends a fresh snapshot when it moved.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

STRIP = 50  # verdicts in a tile's strip
EVENTS = 200  # events kept per station
HOURS = 48  # hourly buckets kept


@dataclass
class CameraState:
    name: str
    status: str = "unknown"
    status_at: float | None = None
    last: dict[str, Any] | None = None  # the latest result, as published
    strip: deque[str] = field(default_factory=lambda: deque(maxlen=STRIP))
    ok: int = 0
    defect: int = 0
    overlay: bytes | None = None
    overlay_seq: int = 0

    def summary(self) -> dict[str, Any]:
        last = self.last or {}
        return {
            "name": self.name,
            "status": self.status,
            "status_at": self.status_at,
            "ok": self.ok,
            "defect": self.defect,
            "strip": list(self.strip),
            "overlay_seq": self.overlay_seq,
            "last": None
            if not last
            else {
                "verdict": last.get("verdict"),
                "score": last.get("score"),
                "threshold": last.get("threshold"),
                "class": (last.get("class") or {}).get("name"),
                "seq": last.get("seq"),
                "captured_at": last.get("captured_at"),
                "model": last.get("model"),
                "total_ms": (last.get("latency_ms") or {}).get("total"),
                "regions": len(last.get("regions") or []),
            },
        }


@dataclass
class StationState:
    name: str
    online: bool | None = None  # None: no availability message seen yet
    stats: dict[str, Any] | None = None
    cameras: dict[str, CameraState] = field(default_factory=dict)
    events: deque[Any] = field(default_factory=lambda: deque(maxlen=EVENTS))
    # (camera, score, threshold, verdict, class) of the last N results
    scores: deque[tuple[str, Any, Any, str, str]] = field(default_factory=deque)
    hourly: dict[int, Counter[str]] = field(default_factory=dict)  # hour start (epoch) -> ok/defect counts
    classes: Counter[str] = field(default_factory=Counter)  # class name -> results with that class

    def camera(self, name: str) -> CameraState:
        if name not in self.cameras:
            self.cameras[name] = CameraState(name)
        return self.cameras[name]


class ReviewState:
    """Thread-safe: the MQTT thread applies messages, the web server reads snapshots."""

    def __init__(self, prefix: str, history: int = 500):
        self.prefix_levels = len(prefix.split("/"))
        self.history = history
        self.stations: dict[str, StationState] = {}
        self.broker_connected = False
        self.version = 0
        self.received = 0
        self._lock = threading.Lock()

    def _station(self, name: str) -> StationState:
        if name not in self.stations:
            self.stations[name] = StationState(name, scores=deque(maxlen=self.history))
        return self.stations[name]

    def set_broker(self, connected: bool) -> None:
        with self._lock:
            self.broker_connected = connected
            self.version += 1

    def apply(self, topic: str, payload: bytes | bytearray) -> None:
        """One MQTT message; anything unparsable is ignored (a bad message must not stop the page)."""
        parts = topic.split("/")[self.prefix_levels :]
        if len(parts) < 2 or parts[1] == "cmd":
            return
        station, rest = parts[0], parts[1:]
        with self._lock:
            self.received += 1
            state = self._station(station)
            if rest == ["availability"]:
                state.online = payload.strip() == b"online"
            elif rest == ["stats"]:
                state.stats = _json(payload)
            elif rest == ["events"]:
                event = _json(payload)
                if event is not None:
                    state.events.append(event)
            elif len(rest) == 2 and rest[1] == "result":
                self._apply_result(state, rest[0], _json(payload))
            elif len(rest) == 2 and rest[1] == "status":
                status = _json(payload) or {}
                camera = state.camera(rest[0])
                camera.status, camera.status_at = str(status.get("status", "unknown")), status.get("at")
            elif len(rest) == 2 and rest[1] == "overlay":
                camera = state.camera(rest[0])
                camera.overlay, camera.overlay_seq = bytes(payload), camera.overlay_seq + 1
            else:
                return
            self.version += 1

    def _apply_result(self, state: StationState, camera_name: str, result: dict[str, Any] | None) -> None:
        if not isinstance(result, dict) or result.get("verdict") not in ("ok", "defect"):
            return
        camera = state.camera(camera_name)
        camera.last = result
        defect = result["verdict"] == "defect"
        camera.defect += defect
        camera.ok += not defect
        camera.strip.append(result["verdict"])
        class_name = (result.get("class") or {}).get("name") or "good"
        state.classes[class_name] += 1
        state.scores.append((camera_name, result.get("score"), result.get("threshold"), result["verdict"], class_name))
        at = result.get("captured_at_epoch") or time.time()
        hour = int(at // 3600 * 3600)
        state.hourly.setdefault(hour, Counter())[result["verdict"]] += 1
        for old in sorted(state.hourly)[:-HOURS]:
            del state.hourly[old]

    # ---- reads ------------------------------------------------------------------------------
    def overlay(self, station: str, camera: str) -> bytes | None:
        with self._lock:
            state = self.stations.get(station)
            cam = state.cameras.get(camera) if state else None
            return cam.overlay if cam else None

    def snapshot(self) -> dict[str, Any]:
        """Everything the live and fleet views need, JSON-ready."""
        with self._lock:
            return {
                "version": self.version,
                "broker_connected": self.broker_connected,
                "received": self.received,
                "stations": {
                    name: {
                        "name": name,
                        "online": s.online,
                        "stats": s.stats,
                        "cameras": {c: cam.summary() for c, cam in sorted(s.cameras.items())},
                        "events": list(s.events)[-20:],
                        "ok": sum(c.ok for c in s.cameras.values()),
                        "defect": sum(c.defect for c in s.cameras.values()),
                    }
                    for name, s in sorted(self.stations.items())
                },
            }

    def station_stats(self, station: str) -> dict[str, Any]:
        """Counts per hour, defect rate per class, the last N scores with their thresholds."""
        with self._lock:
            s = self.stations.get(station)
            if s is None:
                return {"hourly": [], "classes": {}, "scores": [], "total": 0}
            total = sum(s.classes.values())
            return {
                "hourly": [{"hour": h, "ok": c["ok"], "defect": c["defect"]} for h, c in sorted(s.hourly.items())],
                "classes": {name: {"count": n, "rate": n / total} for name, n in s.classes.most_common()},
                "scores": [
                    {"camera": c, "score": sc, "threshold": th, "verdict": v, "class": k}
                    for c, sc, th, v, k in s.scores
                ],
                "total": total,
            }

    def events(self, station: str) -> list[dict[str, Any]]:
        with self._lock:
            s = self.stations.get(station)
            return list(s.events) if s else []


def _json(payload: bytes | bytearray) -> Any:
    try:
        return json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
