"""Shared support of the tests: real daemons, brokers, review processes, TLS files, tiny ONNX graphs, and the
fixtures made with torch (`prebuilt`), handed to the torch-free station venv as files."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
