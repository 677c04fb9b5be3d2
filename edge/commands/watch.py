"""`onen watch --config station.yaml [--json]`: print the station's verdicts live, one line per result.

Subscribes to `<prefix>/<station>/+/result` on the station's broker (same TLS and credentials as the
daemon) so an engineer sees what the line decides without writing an MQTT client; `--json` prints
the raw result messages instead, one per line, for piping into jq.
"""

from __future__ import annotations

import argparse
import json
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from paho.mqtt.client import Client, ConnectFlags, MQTTMessage
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "watch",
        help="print a station's verdicts live from its broker (one line per result)",
        description="Subscribe to the station's result topics and print camera, seq, verdict, score vs threshold, "
        "class, region count and frame source for every result. Ctrl-C stops.",
    )
    parser.add_argument("--config", "-c", type=Path, required=True, help="the station YAML file")
    parser.add_argument("--json", action="store_true", help="print the raw result messages, one JSON per line")
    parser.add_argument("--count", type=int, default=0, help="stop after this many results (0: run until Ctrl-C)")
    parser.set_defaults(handler=run)


def verdict_line(result: dict[str, Any]) -> str:
    """One human line per result, like `onen demo` prints."""
    cls = result.get("class") or {}
    probability = cls.get("probability")
    cls_text = cls.get("name", "?") + (f" {probability:.2f}" if isinstance(probability, (int, float)) else "")
    source = result.get("source") or {}
    parts = [source.get("file") or ""]
    if source.get("frame_index") is not None:
        parts.append(f"frame {source['frame_index']}")
    elif source.get("frame_counter") is not None:
        parts.append(f"frame #{source['frame_counter']} (connection {source.get('connection', 0)})")
    where = " ".join(p for p in parts if p)
    line = (
        f"{result.get('camera', '?'):<12s} seq {result.get('seq', '?'):>6}  {result.get('verdict', '?'):<6s} "
        f"score {result.get('score', 0.0):.3f} / {result.get('threshold', 0.5):.2f}  class {cls_text:<16s} "
        f"regions {len(result.get('regions') or [])}"
    )
    return line + (f"  {where}" if where else "")


def run(args: argparse.Namespace) -> int:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from onen.edge.config import load_config
    from onen.edge.publisher import Topics, apply_security

    config = load_config(args.config)
    topics = Topics(config.mqtt.prefix, config.station)
    topic_filter = f"{topics.base}/+/result"
    done = threading.Event()
    seen = 0

    def on_connect(
        client: Client, userdata: Any, flags: ConnectFlags, reason_code: ReasonCode, properties: Properties | None
    ) -> None:
        if reason_code.is_failure:
            print(f"mqtt: {config.mqtt.host}:{config.mqtt.port} refused: {reason_code}", flush=True)
            return
        client.subscribe(topic_filter, qos=1)
        print(f"mqtt: watching {topic_filter} on {config.mqtt.host}:{config.mqtt.port}", flush=True)

    def on_message(client: Client, userdata: Any, message: MQTTMessage) -> None:
        nonlocal seen
        try:
            result = json.loads(message.payload)
        except ValueError:
            print(f"{message.topic}: not JSON ({len(message.payload)} bytes)", flush=True)
            return
        print(json.dumps(result) if args.json else verdict_line(result), flush=True)
        seen += 1
        if args.count and seen >= args.count:
            done.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="", clean_session=True)
    apply_security(client, config.mqtt)
    client.on_connect = on_connect
    client.on_message = on_message
    client.reconnect_delay_set(0.5, 10)  # type: ignore[arg-type]  # paho annotates int; it sleeps any float
    client.connect_async(config.mqtt.host, int(config.mqtt.port))
    client.loop_start()
    try:
        while not done.wait(0.2):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        client.loop_stop()
        client.disconnect()
    return 0
