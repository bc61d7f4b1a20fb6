"""What each process `accelerate launch` starts runs (launch.launcher=accelerate): iteration K's train stage of
run RUN, data-parallel with the other processes; rank 0 writes train.json, which the launching process reads.

    python -m selfplay.launched RUN_DIR K
"""

from __future__ import annotations

import sys
from pathlib import Path

from selfplay.loop import train_launched
from selfplay.rundir import Run


def main(argv: list[str] | None = None) -> None:
    run_root, k = (argv if argv is not None else sys.argv[1:])[:2]
    train_launched(Run.open(Path(run_root)), int(k))


if __name__ == "__main__":
    main()
