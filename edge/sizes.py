"""Sizes written as text ("1920x1080", "512x192", "128"): one parser, so every option reads and refuses them alike.

Cameras and calibration write width first (as camera settings are), the model's options height first (as its
tensors are); the caller says which form it expects, and the error message shows that form.
"""

from __future__ import annotations

from onen.edge.errors import DataError


def parse_pixel_size(text: str | int, option: str, form: str, example: str, square: bool = False) -> tuple[int, int]:
    """'AxB' -> (A, B) in the order written; 'N' -> (N, N) when `square`. Both sides must be positive.

    `option` names where the text came from (a flag, or file:key), `form` what is expected ("WIDTHxHEIGHT").
    """
    value = str(text).strip().lower()
    expected = f"{'N or ' if square else ''}{form} in pixels, e.g. {example}"
    try:
        sides = [int(v) for v in value.split("x")]
    except ValueError:
        sides = []
    if square and len(sides) == 1:
        sides = sides * 2
    if len(sides) != 2:
        raise DataError(f"{option} {text!r}: expected {expected}")
    if min(sides) <= 0:
        raise DataError(f"{option} {text!r}: both sides must be positive ({expected})")
    return sides[0], sides[1]
