"""Small JSON files keeperd keeps in its state directory beside the database (the realised
bad debt's parts, doubted price sources): written aside and renamed into place, so a kill
mid-write leaves the old file whole."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_json(path: Path, data: Any) -> None:
    """`data` as JSON at `path`, whole or not at all (OSError: the caller says so)."""
    aside = path.with_suffix(".tmp")
    aside.write_text(json.dumps(data))
    os.replace(aside, path)
