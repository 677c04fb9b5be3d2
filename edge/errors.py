"""Errors shared by every part: each names the file and what was expected."""

from __future__ import annotations


class OnenError(Exception):
    """Base of the package's own errors."""


class DataError(OnenError, ValueError):
    """Bad input data: unreadable image, wrong mask size, missing column... The message names the file."""


class BundleError(OnenError):
    """A model bundle that is incomplete, tampered with, or does not follow the contract."""
