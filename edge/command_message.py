"""Reading a command message from the broker, whatever it holds.

Anyone who can publish on the station's `cmd/` topics can send any bytes: deeply nested JSON (a
RecursionError in the decoder), a list, a number, binary. Every such message must end in a clean
rejection that the sender sees on `events`, never in a traceback, so every command reads its payload here.
"""

from __future__ import annotations

import json
from typing import Any

from onen.edge.errors import OnenError

MAX_COMMAND_BYTES = 64 * 1024 * 1024  # a bundle travels base64 in the message; anything larger is refused unread


class CommandError(OnenError):
    """A command message that cannot be read; the text says what was expected."""


def load_command(payload: bytes, schema: str | tuple[str, ...], text_fields: tuple[str, ...] = ()) -> dict[str, Any]:
    """The message as a dict whose `schema` is `schema` (or one of them), every key in `text_fields` absent or
    a string."""
    schemas = (schema,) if isinstance(schema, str) else schema
    expected = " or ".join(repr(s) for s in schemas)
    if len(payload) > MAX_COMMAND_BYTES:
        raise CommandError(f"message of {len(payload)} bytes is larger than {MAX_COMMAND_BYTES} bytes")
    try:
        message = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as error:
        raise CommandError(f"message is not JSON ({error})") from error
    except RecursionError as error:
        raise CommandError("message is JSON nested too deeply to read") from error
    if not isinstance(message, dict):
        raise CommandError(f"expected a JSON object with schema {expected}, got a JSON {type(message).__name__}")
    if message.get("schema") not in schemas:
        raise CommandError(f"expected a JSON object with schema {expected}, got schema {_short(message.get('schema'))}")
    for key in text_fields:
        value = message.get(key)
        if value is not None and not isinstance(value, str):
            raise CommandError(f"{key!r} must be a string, got {_short(value)}")
    return message


def request_id_of(payload: bytes) -> str | None:
    """The request id of a (maybe malformed) command, so even its rejection reaches the sender."""
    try:
        message = json.loads(payload) if len(payload) <= MAX_COMMAND_BYTES else None
    except (ValueError, RecursionError):
        return None
    return request_id_from(message)


def request_id_from(message: object) -> str | None:
    """The request id of an already decoded message (a bundle's payload is large: decode it once)."""
    value = message.get("request_id") if isinstance(message, dict) else None
    return _short(value, 200) if value is not None and not isinstance(value, (dict, list)) else None


def _short(value: object, limit: int = 80) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
