"""Split Anthropic hh-rlhf transcripts into prompt messages and the final response.

A transcript reads ``\\n\\nHuman: ...\\n\\nAssistant: ...``; only a turn marker at the very
start or after a blank line counts (a "Human:" inside a sentence is content). Decisions:

- each turn's content is stripped of surrounding whitespace (the chat template adds its own);
- consecutive turns by the same speaker are merged into one message, joined by a single
  newline (a blank line could turn a merged "Human: ..." into a fake turn marker). The real
  data has such doubled ``Assistant:`` markers (13 of 4,624 transcripts in harmless-base
  test); merging keeps roles alternating, which strict chat templates require, and makes the
  chosen and rejected prompts agree for every pair of that file;
- the response is the content of the LAST assistant turn; everything before it is the prompt.
"""

from __future__ import annotations

import re

from rmaudit.data.pairs import Message

_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):")
_ROLES = {"Human": "user", "Assistant": "assistant"}
_SPEAKERS = {role: speaker for speaker, role in _ROLES.items()}


def looks_like_hh_transcript(text: str) -> bool:
    """True when ``text`` opens with a Human turn and holds an Assistant turn."""
    return bool(re.match(r"\s*(?:\n\n)?Human:", text)) and "Assistant:" in text


def parse_hh_turns(text: str) -> list[Message]:
    """All turns of a transcript as alternating user/assistant messages.

    Raises ValueError when text precedes the first turn marker or there is no marker.
    """
    parts = _TURN.split(text.lstrip(" \t"))
    if parts[0].strip():
        raise ValueError("text before the first 'Human:' or 'Assistant:' turn")
    messages: list[Message] = []
    for speaker, content in zip(parts[1::2], parts[2::2]):
        role, content = _ROLES[speaker], content.strip()
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"] = f"{messages[-1]['content']}\n{content}".strip()
        else:
            messages.append({"role": role, "content": content})
    if not messages:
        raise ValueError("no 'Human:' or 'Assistant:' turn found")
    return messages


def split_hh_transcript(text: str) -> tuple[list[Message], str]:
    """Split a transcript at its last assistant turn into (prompt messages, response).

    Raises ValueError when the transcript does not end with an assistant turn.
    """
    messages = parse_hh_turns(text)
    if messages[-1]["role"] != "assistant":
        raise ValueError("transcript does not end with an 'Assistant:' turn")
    return messages[:-1], messages[-1]["content"]


def join_hh_transcript(prompt: list[Message], response: str) -> str:
    """Write messages back as an hh-rlhf transcript (inverse of `split_hh_transcript`)."""
    turns = [*prompt, {"role": "assistant", "content": response}]
    return "".join(f"\n\n{_SPEAKERS[m['role']]}: {m['content']}" for m in turns)
