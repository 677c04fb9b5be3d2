"""Optional Prometheus endpoint (metrics.prometheus_port): the same figures as the stats topic.

prometheus_client is imported only when the port is configured, so a station without it still runs.
Values are read from the daemon at scrape time (a custom collector), nothing is double-counted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from onen.edge.errors import OnenError
from onen.edge.extras import missing_module_message

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from prometheus_client.metrics_core import Metric


class StatsSource(Protocol):
    """What the endpoint reads at scrape time (the daemon)."""

    def stats_message(self) -> dict[str, Any]: ...


def start_metrics_server(port: int, daemon: StatsSource, address: str = "0.0.0.0") -> MetricsServer:
    try:
        from prometheus_client import start_http_server
        from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily
        from prometheus_client.registry import Collector
    except ImportError as error:
        raise OnenError(
            f"metrics.prometheus_port is set ({port}) but "
            f"{missing_module_message(error.name or 'prometheus_client')}; or remove metrics.prometheus_port"
        ) from error

    class DaemonCollector(Collector):
        def collect(self) -> Iterator[Metric]:
            stats = daemon.stats_message()
            frames = CounterMetricFamily("onen_frames_inspected", "Frames inspected", labels=["camera"])
            failed = CounterMetricFamily("onen_frames_failed", "Frames that failed inspection", labels=["camera"])
            dropped = CounterMetricFamily(
                "onen_frames_dropped", "Frames dropped by the camera queue", labels=["camera"]
            )
            fps = GaugeMetricFamily("onen_fps", "Inspected frames per second (recent window)", labels=["camera"])
            for camera, values in stats["cameras"].items():
                frames.add_metric([camera], values["inspected"])
                failed.add_metric([camera], values["failed"])
                dropped.add_metric([camera], values["dropped"])
                fps.add_metric([camera], stats["fps"].get(camera, 0.0))
            latency = GaugeMetricFamily(
                "onen_latency_ms", "Latency percentiles per stage", labels=["stage", "quantile"]
            )
            for stage, percentiles in stats["latency_ms"].items():
                for name, value in percentiles.items():
                    latency.add_metric([stage, f"0.{name[1:]}"], value)
            yield from (frames, failed, dropped, fps, latency)
            yield GaugeMetricFamily("onen_spool_depth", "Results waiting for a broker ack", value=stats["spool_depth"])
            yield GaugeMetricFamily(
                "onen_healthy", "1 when every camera and engine is healthy", value=1.0 if stats["healthy"] else 0.0
            )
            yield GaugeMetricFamily("onen_uptime_seconds", "Daemon uptime", value=stats["uptime_s"])

    collector = DaemonCollector()
    REGISTRY.register(collector)
    server, _thread = start_http_server(port, addr=address)
    return MetricsServer(server, lambda: REGISTRY.unregister(collector))


class MetricsServer:
    """The running endpoint; shutdown() closes the port and forgets the collector."""

    def __init__(self, server: WSGIServer, unregister: Callable[[], None]) -> None:
        self._server = server
        self._unregister = unregister
        self.port = server.server_address[1]

    def shutdown(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._unregister()
