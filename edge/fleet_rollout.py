"""`onen fleet apply`: bring every station to its group's desired state, canary first, then in waves.

Each wave goes through the existing signed push (`cmd/model/install`, then `cmd/{camera}/calibration` for
the group's calibrations) and is gated before the next starts:
1. answers: every station answers `model_swapped` (and `calibration_updated` per camera) within
   `rollout.answer_timeout_s`; a `model_update_rejected` / `calibration_rejected` or no answer halts;
2. soak: for `rollout.soak_s` (and until each station sent `rollout.min_results` results on the new model),
   a camera error (`camera_lost`, `camera_error`, `frame_error`) or a station going offline halts;
3. false rejects: every reject on the new model is counted as a false one (the station cannot tell), so the
   camera's reject rate is an upper bound of its false-reject rate; the wave halts when k rejects in n results
   are too many for a true rate within the calibration's `target_frr` (plus `rollout.defect_allowance`, the
   line's own defect rate) at the calibration's confidence: P(X >= k | n, bound) < 1 - confidence.
A halt stops the rollout where it is: stations already updated stay updated (`onen push --rollback` per
station, or the previous fleet file applied again), later waves are not touched.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from onen.edge.binomial import binom_cdf
from onen.edge.fleet_config import FleetConfig, RolloutConfig
from onen.edge.fleet_link import FleetLink
from onen.edge.fleet_state import DesiredGroup, FrrBound, StationView, views
from onen.edge.updates import install_message

CAMERA_ERRORS = ("camera_lost", "camera_error", "frame_error")


class Halt(Exception):
    """A gate failed: the reason is printed and the rollout stops."""


def plan_waves(stations: list[str], canary: list[str], wave_size: int) -> list[list[str]]:
    """The canary stations alone, then the others in file order, `wave_size` at a time."""
    rest = [s for s in stations if s not in canary]
    return [list(canary)] + [rest[i : i + wave_size] for i in range(0, len(rest), wave_size)]


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    return 1.0 if k <= 0 else max(0.0, 1.0 - binom_cdf(k - 1, n, p))


def too_many_rejects(rejects: int, results: int, bound: float, confidence: float) -> bool:
    """True when `rejects` in `results` cannot come from a reject rate <= bound (one-sided, at confidence)."""
    return results > 0 and binomial_tail(rejects, results, min(1.0, bound)) < 1.0 - confidence


class Rollout:
    """Runs the waves over one FleetLink; `say` prints progress."""

    def __init__(
        self,
        config: FleetConfig,
        groups: dict[str, DesiredGroup],
        link: FleetLink,
        say: Callable[[str], None] = print,
    ) -> None:
        self.config, self.groups, self.link, self.say = config, groups, link, say
        self.rules: RolloutConfig = config.rollout

    def group_of(self, station: str) -> DesiredGroup:
        return self.groups[self.config.stations[station].group]

    def run(self) -> int:
        """0: every station in sync; 1: halted (the reason was said)."""
        rows = {row.station: row for row in views(self.config, self.groups, self.link.snapshot())}
        waves = plan_waves(list(self.config.stations), self.config.canary(), self.rules.wave_size)
        for number, stations in enumerate(waves):
            targets = [s for s in stations if rows[s].verdict != "in sync"]
            label = "canary" if number == 0 else f"wave {number}"
            if not targets:
                self.say(f"{label}: {', '.join(stations)} already in sync")
                continue
            self.say(f"{label}: {', '.join(targets)}")
            try:
                self.wave(targets, rows)
            except Halt as halt:
                later = [s for w in waves[number + 1 :] for s in w]
                self.say(f"HALTED in {label}: {halt}")
                if later:
                    self.say(f"not touched: {', '.join(later)}")
                return 1
            self.say(f"{label}: passed")
        return 0

    # ---- one wave -----------------------------------------------------------------------------------------
    def wave(self, targets: list[str], rows: dict[str, StationView]) -> None:
        link = self.link
        unfit = [f"{s}: {rows[s].problem}" for s in targets if rows[s].problem and rows[s].reported_model is not None]
        if unfit:  # e.g. a camera the group calibrates that the station does not have: sending would change nothing
            raise Halt("; ".join(unfit))
        first_event = len(link.logs.events)
        link.watch_results(targets)
        requests = {}
        for station in targets:
            if rows[station].needs_model:
                group = self.group_of(station)
                payload, request_id = install_message(model=rows[station].model_slot, tar_bytes=group.payload)
                self.say(f"  {station}: pushing {group.bundle_name} {group.version} ({group.signed})")
                link.send(station, "model/install", payload)
                requests[station] = request_id
        if requests:
            self._answers(first_event, requests)
        swapped_at = time.monotonic()
        pending = {}
        for station in targets:
            group = self.group_of(station)
            cameras = list(group.calibrations) if station in requests else rows[station].needs_calibration
            for camera in cameras:
                link.send(station, f"{camera}/calibration", group.calibrations[camera].message)
                pending[(station, camera)] = group.calibrations[camera].sha12
        if pending:
            self._calibration_answers(first_event, pending)
        self._soak(targets, first_event, swapped_at)

    def _events(self, first: int) -> list[dict[str, Any]]:
        return self.link.logs.events[first:]

    def _answers(self, first_event: int, requests: dict[str, str]) -> None:
        def answers() -> dict[str, dict[str, Any]]:
            found: dict[str, dict[str, Any]] = {}
            for event in self._events(first_event):
                detail = event.get("detail") or {}
                station = event.get("station")
                if station in requests and detail.get("request_id") == requests[station]:
                    if event.get("kind") in ("model_swapped", "model_update_rejected"):
                        found.setdefault(station, event)
            return found

        self.link.wait(lambda: len(answers()) == len(requests), self.rules.answer_timeout_s)
        with self.link.lock:
            found = answers()
        for station, event in found.items():
            detail = event.get("detail") or {}
            if event["kind"] == "model_swapped":
                self.say(
                    f"  {station}: swapped to {detail.get('new', {}).get('version')} in {detail.get('swap_ms')} ms"
                )
        refused = {s: e for s, e in found.items() if e["kind"] == "model_update_rejected"}
        if refused:
            raise Halt(
                "; ".join(
                    f"station {s} refused the model: {(e.get('detail') or {}).get('reason')}"
                    for s, e in refused.items()
                )
            )
        silent = [s for s in requests if s not in found]
        if silent:
            raise Halt(f"no answer within {self.rules.answer_timeout_s:g} s from {', '.join(silent)}")

    def _calibration_answers(self, first_event: int, pending: dict[tuple[str, str], str]) -> None:
        def answers() -> dict[tuple[str, str], dict[str, Any]]:
            found: dict[tuple[str, str], dict[str, Any]] = {}
            for event in self._events(first_event):
                detail = event.get("detail") or {}
                key = (event.get("station"), detail.get("camera"))
                if key not in pending:
                    continue
                if event.get("kind") == "calibration_rejected" or (
                    event.get("kind") == "calibration_updated" and str(detail.get("version", "")).endswith(pending[key])
                ):
                    found.setdefault(key, event)
            return found

        self.link.wait(lambda: len(answers()) == len(pending), self.rules.answer_timeout_s)
        with self.link.lock:
            found = answers()
        refused = [
            f"station {s} camera {c} refused the calibration: {(e.get('detail') or {}).get('reason')}"
            for (s, c), e in found.items()
            if e["kind"] == "calibration_rejected"
        ]
        if refused:
            raise Halt("; ".join(refused))
        silent = [f"{s}/{c}" for s, c in pending if (s, c) not in found]
        if silent:
            raise Halt(f"no calibration answer within {self.rules.answer_timeout_s:g} s from {', '.join(silent)}")
        for station, camera in pending:
            self.say(f"  {station}: camera {camera} calibrated ({found[(station, camera)]['detail'].get('version')})")

    def _soak(self, targets: list[str], first_event: int, started: float) -> None:
        rules = self.rules
        deadline = started + rules.soak_s + rules.answer_timeout_s
        while True:
            with self.link.lock:
                self._check_events(targets, first_event)
                counts = self._counts(targets)
                snapshot = {s: self.link.reported.get(s) for s in targets}
            offline = [s for s, r in snapshot.items() if r is not None and r.availability == "offline"]
            if offline:
                raise Halt(f"went offline during the soak: {', '.join(offline)}")
            self._check_rejects(targets, counts)
            enough = all(
                sum(n for (s, _), (n, _) in counts.items() if s == station) >= rules.min_results for station in targets
            )
            now = time.monotonic()
            if now - started >= rules.soak_s and enough:
                break
            if now >= deadline:
                short = [
                    f"{station} ({sum(n for (s, _), (n, _) in counts.items() if s == station)})"
                    for station in targets
                    if sum(n for (s, _), (n, _) in counts.items() if s == station) < rules.min_results
                ]
                raise Halt(f"fewer than {rules.min_results} results on the new model from {', '.join(short)}")
            time.sleep(0.2)
        for (station, camera), (n, k) in sorted(counts.items()):
            self.say(f"  {station}: camera {camera}: {n} results on the new model, {k} rejected")

    def _check_events(self, targets: list[str], first_event: int) -> None:
        for event in self._events(first_event):
            if event.get("station") in targets and event.get("kind") in CAMERA_ERRORS:
                detail = event.get("detail") or {}
                raise Halt(
                    f"station {event['station']}: {event['kind']} on camera {detail.get('camera')} "
                    f"({detail.get('reason') or detail.get('error') or ''})".rstrip(" ()")
                )

    def _counts(self, targets: list[str]) -> dict[tuple[str, str], tuple[int, int]]:
        """(station, camera) -> (results on the desired model, rejects), each capture counted once: results are
        logged from the wave's start on, and told apart from the old model's by its sha256."""
        seen: set[tuple[str, str, str, int]] = set()
        counts: dict[tuple[str, str], tuple[int, int]] = {}
        for result in self.link.logs.results:
            station, camera = str(result.get("station")), str(result.get("camera"))
            if station not in targets or (result.get("model") or {}).get("sha256") != self.group_of(station).sha256:
                continue
            key = (station, camera, str(result.get("run_id")), int(result.get("seq", -1)))
            if key in seen:  # a QoS 1 redelivery
                continue
            seen.add(key)
            n, k = counts.get((station, camera), (0, 0))
            counts[(station, camera)] = (n + 1, k + (result.get("verdict") == "defect"))
        return counts

    def _bound(self, station: str, camera: str) -> FrrBound | None:
        calibration = self.group_of(station).calibrations.get(camera)
        if calibration is not None and calibration.bound is not None:
            return FrrBound(calibration.bound.rate + self.rules.defect_allowance, calibration.bound.confidence)
        if self.rules.max_reject_rate is not None:
            return FrrBound(self.rules.max_reject_rate, 0.95)
        return None

    def _check_rejects(self, targets: list[str], counts: dict[tuple[str, str], tuple[int, int]]) -> None:
        for (station, camera), (n, k) in counts.items():
            bound = self._bound(station, camera)
            if bound is not None and too_many_rejects(k, n, bound.rate, bound.confidence):
                raise Halt(
                    f"station {station} camera {camera}: {k} of {n} results rejected on the new model, above the "
                    f"bound {bound.rate:.3%} at {bound.confidence:.0%} confidence"
                )
