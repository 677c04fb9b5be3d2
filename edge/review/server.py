"""Run the review page: MQTT feed + Starlette app under uvicorn, until SIGINT/SIGTERM."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from onen.edge.review.archive_view import ArchiveView
from onen.edge.review.mqtt_feed import MqttFeed
from onen.edge.review.state import ReviewState

if TYPE_CHECKING:
    from onen.edge.config import StationConfig

log = logging.getLogger(__name__)


def serve(config: StationConfig, host: str, port: int, fleet: bool = False) -> int:
    import uvicorn

    from onen.edge.review.app import create_app

    state = ReviewState(config.mqtt.prefix, history=config.review.history)
    feed = MqttFeed(config.mqtt, config.station, state, fleet=fleet)
    app = create_app(config, state, ArchiveView(config.archive.path), fleet=fleet)
    feed.start()
    log.info("review page on http://%s:%d/ (station %s%s)", host, port, config.station, ", fleet view" if fleet else "")
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=2)
    finally:
        feed.stop()
    return 0
