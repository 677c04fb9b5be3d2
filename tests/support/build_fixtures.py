"""`python -m tests.support.build_fixtures OUT_DIR`: makes the torch-built test fixtures (support.prebuilt) in
the full venv, for the station venv's run (ONEN_TEST_FIXTURES=OUT_DIR)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from .prebuilt import build_all


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    print(build_all(args.out_dir))


if __name__ == "__main__":
    main()
