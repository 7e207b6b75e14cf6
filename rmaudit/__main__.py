"""`python -m rmaudit ...`, e.g. under `accelerate launch -m rmaudit train ...`."""

from rmaudit.cli import entry_point

if __name__ == "__main__":
    entry_point()
