"""The one record every preference source normalises to: `PreferencePair`."""

from __future__ import annotations

from dataclasses import dataclass, field

Message = dict[str, str]
"""One chat message: ``{"role": ..., "content": ...}``."""


@dataclass
class PreferencePair:
    """A prompt (as chat messages) with a preferred and a dispreferred final assistant turn."""

    prompt: list[Message]
    """Everything before the final assistant turn, oldest first."""
    chosen: str
    """Content of the preferred final assistant turn."""
    rejected: str
    """Content of the dispreferred final assistant turn."""
    margin: float | None = None
    """Optional per-pair Bradley-Terry margin (reward gap the pair asks for)."""
    source: str = ""
    """File the pair came from."""
    row: int = 0
    """1-based row of the pair in that file (JSONL: the line number), for error messages."""
    category: str | None = None
    """Optional label used to break results down (e.g. "arithmetic")."""
    meta: dict = field(default_factory=dict)
    """Anything else worth keeping: adapter labels, extra scalar columns, required margins."""

    def chosen_messages(self) -> list[Message]:
        """The whole conversation ending in the chosen response."""
        return [*self.prompt, {"role": "assistant", "content": self.chosen}]

    def rejected_messages(self) -> list[Message]:
        """The whole conversation ending in the rejected response."""
        return [*self.prompt, {"role": "assistant", "content": self.rejected}]

    def prompt_text(self) -> str:
        """A readable flattening of the prompt for reports and leakage checks.

        A single user message reads as its bare content; longer conversations get one
        ``role: content`` block per message.
        """
        if len(self.prompt) == 1 and self.prompt[0]["role"] == "user":
            return self.prompt[0]["content"]
        return "\n\n".join(f"{m['role']}: {m['content']}" for m in self.prompt)
