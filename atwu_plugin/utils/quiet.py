"""Drop library log lines that tell a user of the lite host nothing (``atwu-demo --verbose``
shows them again).

Each is removed by a ``logging.Filter`` on the very logger that emits it, matched by the start
of its message, so every other line of those libraries (real warnings and errors) still shows.
``ATWU_QUIET_LIBRARIES=1`` in the environment installs the filters when ``atwu_plugin`` is
imported: spawned worker processes (the zoo build's fine-tunes, ``--jobs`` cells) import the
package to unpickle their job before anything else, so they are quiet from their first line.
"""

import logging
import os
from typing import Dict, Tuple

ENV_VAR = "ATWU_QUIET_LIBRARIES"

# logger name -> (message prefix, why it carries no information here)
NOISE: Dict[str, Tuple[Tuple[str, str], ...]] = {
    "transformers.modeling_utils": (
        ("Could not estimate the number of tokens of the input",
         "Trainer's FLOP counter cannot read the unlearning batches ({forget, retain} pairs): "
         "one line per cell, and no FLOPs are reported anywhere"),
    ),
    "transformers.models.llama.modeling_llama": (
        ("Starting from v4.46, the `logits` model output",
         "a notice about a future transformers version; every model here is float32"),
    ),
    "DeepSpeed": (
        ("Setting accelerator to CPU", "deepspeed (imported by transformers) detecting a CPU-only machine"),
        ("Setting ds_accelerator to", "the same, twice per process"),
    ),
}


class _DropByPrefix(logging.Filter):
    def __init__(self, prefixes: Tuple[str, ...]):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


def silence_library_noise() -> None:
    """Install the filters of :data:`NOISE` (idempotent). Safe before the libraries are
    imported: ``logging.getLogger`` returns the same logger object they configure later, and
    configuring a logger (level, handlers) keeps its filters."""
    for name, entries in NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropByPrefix) for f in logger.filters):
            logger.addFilter(_DropByPrefix(tuple(prefix for prefix, _ in entries)))


def quiet_children(enabled: bool = True) -> None:
    """Silence this process now and, through :data:`ENV_VAR`, the processes it spawns."""
    if enabled:
        os.environ[ENV_VAR] = "1"
        silence_library_noise()
    else:
        os.environ.pop(ENV_VAR, None)
