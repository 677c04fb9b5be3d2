"""Sizes given as text: one parser for cameras, calibration and the model's input, refusing alike."""

from __future__ import annotations

import argparse

import pytest

from onen.benchmarks.daemon import camera_size
from onen.calibration.commands.calibrate import parse_size as rectify_size
from onen.edge.errors import DataError
from onen.edge.sizes import parse_pixel_size


def test_sides_come_back_in_the_order_written():
    assert parse_pixel_size("1920x1080", "--camera-size", "WIDTHxHEIGHT", "1920x1080") == (1920, 1080)
    assert parse_pixel_size(" 512X192 ", "--size", "HEIGHTxWIDTH", "512x192") == (512, 192)
    assert parse_pixel_size(128, "--size", "HEIGHTxWIDTH", "128", square=True) == (128, 128)


@pytest.mark.parametrize("text", ["128", "12x", "x12", "axb", "1x2x3", "", "0x10", "-4x8"])
def test_a_bad_size_names_the_option_the_text_and_the_form(text):
    with pytest.raises(DataError) as caught:
        parse_pixel_size(text, "station.yaml:cameras.top.size", "WIDTHxHEIGHT", "1280x960")
    message = str(caught.value)
    assert message.startswith(f"station.yaml:cameras.top.size {text!r}:") and "WIDTHxHEIGHT" in message


def test_the_callers_keep_their_own_forms():
    assert rectify_size("1280x960", "--rectify-size") == (1280, 960)
    assert rectify_size(None, "--rectify-size") is None
    assert camera_size("640") == (640, 640) and camera_size("1920x1080") == (1920, 1080)
    with pytest.raises(argparse.ArgumentTypeError, match="--camera-size 'big': expected N or WIDTHxHEIGHT"):
        camera_size("big")
    with pytest.raises(argparse.ArgumentTypeError, match="at least 16 px"):
        camera_size("8x8")
