"""Small conversions shared by every backend: LangChain messages to chat dicts, token usage."""

from __future__ import annotations

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.messages.ai import UsageMetadata


def _role(message: BaseMessage) -> str:
    if isinstance(message, SystemMessage):
        return "system"
    if isinstance(message, HumanMessage):
        return "user"
    if isinstance(message, AIMessage):
        return "assistant"
    if isinstance(message, ToolMessage):
        return "user"  # small models have no tool role: tool output comes back as user text
    raise TypeError(f"unsupported message type {type(message).__name__}")


def to_chat_dicts(messages: list[BaseMessage]) -> list[dict[str, str]]:
    """OpenAI-style [{role, content}] from LangChain messages (text content only)."""
    out = []
    for m in messages:
        content = m.content if isinstance(m.content, str) else m.text
        out.append({"role": _role(m), "content": content})
    return out


def usage(prompt_tokens: int, completion_tokens: int) -> UsageMetadata:
    return UsageMetadata(
        input_tokens=prompt_tokens,
        output_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
    )
