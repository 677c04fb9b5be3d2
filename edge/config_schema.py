"""The station config's JSON Schema, generated from the typed models (`edge.config_models`).

`python -m onen.edge.config_schema` rewrites the shipped `edge/schemas/station-config.schema.json`; a test checks
the shipped file equals what the models generate, so editors and integrators validate against the real thing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from onen.edge.config_models import StationConfig

SCHEMA_FILE = Path(__file__).resolve().parent / "schemas" / "station-config.schema.json"
SCHEMA_ID = "https://onen-inspect.example/schemas/station-config.schema.json"


def station_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a station YAML file, as the models validate it."""
    schema = StationConfig.model_json_schema(mode="validation", by_alias=True)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID, **schema}


def schema_text() -> str:
    return json.dumps(station_schema(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m onen.edge.config_schema", description=__doc__.splitlines()[0])
    parser.add_argument(
        "out", nargs="?", type=Path, default=SCHEMA_FILE, help=f"where to write it (default {SCHEMA_FILE})"
    )
    target = parser.parse_args(argv).out
    target.write_text(schema_text(), encoding="utf-8")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
