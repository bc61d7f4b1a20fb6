"""The libraries' own output off, unless `selfplay --verbose`: a run's terminal shows our one-line messages and our
progress bars, not vLLM's engine logs, transformers' and TRL's warnings, or datasets' per-map bars.

Set before the libraries are imported (each reads its setting at import), which the CLI guarantees: heavy libraries
are imported inside the functions that need them (selfplay/cli/__init__.py), after the CLI's callback has run.
"""

from __future__ import annotations

import logging
import os
import sys
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
    "TORCH_CPP_LOG_LEVEL": "ERROR",  # C++ warnings of torch and of vLLM's CPU kernels ("NUMA binding: ...")
    "TQDM_DISABLE": "1",  # tqdm >= 4.66 reads its defaults from TQDM_* variables: the bars of code that calls tqdm directly
    "PYTHONWARNINGS": "ignore",
}


def quiet_libraries() -> None:
    """Silences the libraries for this process and the ones it starts; a variable the user set is kept."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    # FutureWarning / DeprecationWarning / UserWarning from torch, transformers, TRL and peft: none is ours to act on
    # at run time (ours are log lines, never warnings), and each would print several lines into the run's output.
    warnings.simplefilter("ignore")
    # vLLM configures its logger from VLLM_LOGGING_LEVEL only when an engine starts; a module that logs while vLLM is
    # first imported (its Triton check) goes to Python's last-resort handler, which prints warnings, unless the
    # logger's own level says otherwise. The engine's configuration later sets the same level.
    logging.getLogger("vllm").setLevel(logging.ERROR)
    _already_imported()


def _already_imported() -> None:
    """A library imported before the CLI started (an embedding program, a test session) read its environment
    already: its own switches, then."""
    if "transformers" in sys.modules:
        from transformers.utils import logging as transformers_logging

        transformers_logging.set_verbosity_error()
        transformers_logging.disable_progress_bar()
    if "datasets" in sys.modules:
        import datasets

        datasets.disable_progress_bars()


def verbose_libraries() -> None:
    """`--verbose`: the libraries' INFO logs and warnings shown (ours are unchanged)."""
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "INFO")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "info")
