"""The libraries' own output off, unless `selfplay --verbose`: a run's terminal shows our one-line messages and our
progress bars, not vLLM's engine logs, transformers' and TRL's warnings, or datasets' per-map bars.

Set before the libraries are imported (each reads its setting at import), which the CLI guarantees: heavy libraries
are imported inside the functions that need them (selfplay/cli/__init__.py), after the CLI's callback has run.
"""

from __future__ import annotations

import os
import warnings

# Each library's own switch, read from the environment when it is imported; PYTHONWARNINGS reaches the processes the
# libraries start (vLLM's engine core, dataloader workers), which the `warnings` filter below does not.
QUIET_ENV = {
    "VLLM_LOGGING_LEVEL": "ERROR",
    "TRANSFORMERS_VERBOSITY": "error",
    "DATASETS_VERBOSITY": "error",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONWARNINGS": "ignore",
}


def quiet_libraries() -> None:
    """Silences the libraries for this process and the ones it starts; a variable the user set is kept."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    # FutureWarning / DeprecationWarning / UserWarning from torch, transformers, TRL and peft: none is ours to act on
    # at run time (ours are log lines, never warnings), and each would print several lines into the run's output.
    warnings.simplefilter("ignore")


def verbose_libraries() -> None:
    """`--verbose`: the libraries' INFO logs and warnings shown (ours are unchanged)."""
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "INFO")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "info")
