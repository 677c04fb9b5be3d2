"""Which optional extra of onen-inspect provides a missing module, read from the installed metadata.

A station installs the base package only; `onen train` there must say "pip install 'onen-inspect[train]'"
rather than print a torch traceback. The extras are pyproject.toml's, so nothing here restates them.
"""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, requires

DISTRIBUTION = "onen-inspect"
# import names that differ from their distribution's name
IMPORT_NAMES = {"sklearn": "scikit-learn", "cv2": "opencv-python-headless", "yaml": "pyyaml"}
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)[^;]*;\s*extra\s*==\s*[\"']([^\"']+)[\"']")


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def extra_providing(module: str) -> str | None:
    """The extra whose requirements include `module`'s distribution (the first one listed), or None."""
    top = module.split(".")[0]
    wanted = _normalise(IMPORT_NAMES.get(top, top))
    try:
        lines = requires(DISTRIBUTION) or []
    except PackageNotFoundError:
        return None
    for line in lines:
        match = _REQUIREMENT.match(line)
        if match and _normalise(match.group(1)) == wanted:
            return match.group(2)
    return None


def missing_module_message(module: str) -> str:
    """What to install for a missing module, in the words a station operator can act on."""
    extra = extra_providing(module)
    if extra is None:
        return f"the Python module {module!r} is not installed"
    return f"this needs {module!r}, which is not installed here: pip install '{DISTRIBUTION}[{extra}]'"
