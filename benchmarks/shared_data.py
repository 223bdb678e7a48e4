"""Where the Synthea test data is: `shared/data/synthea-exafluence` beside the checkout.

The checkout may be the repository itself (`/work/main`, the data at `/work/shared/...`) or a
git worktree further down (`/work/wt/NAME`): the nearest folder above the checkout holding
`shared/data/synthea-exafluence` is taken. `require` stops a benchmark with a message naming
`--data` when the data is not there (a clone without the shared data).
"""

from __future__ import annotations

import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]
_RELATIVE = Path("shared") / "data" / "synthea-exafluence"


def synthea(kind: str) -> Path:
    """The Synthea `kind` folder ("ndjson", "bundles") of the nearest `shared/data` above the
    checkout; where it would be beside the checkout when none exists."""
    for folder in CHECKOUT.parents:
        if (folder / _RELATIVE / kind).is_dir():
            return folder / _RELATIVE / kind
    return CHECKOUT.parent / _RELATIVE / kind


def require(data: Path) -> None:
    """Exit with a message when `data` is not a folder."""
    if not data.is_dir():
        sys.exit(
            f"no data at {data}: the Synthea export is looked for in shared/data/ above "
            f"{CHECKOUT}; give --data DIR"
        )
