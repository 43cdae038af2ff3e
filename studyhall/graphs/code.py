"""``code``: tool-integrated reasoning (MARIO, DotaMath). The student writes Python, it runs
in the sandbox, the output comes back; after an error the student may fix and rerun; then it
answers. A program that ran cleanly and printed a number answers directly (no extra call).

    START -> write -> run -> (answered?) -> END
               ^-------------| error and turns left
"""

from __future__ import annotations

import time
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph

from studyhall.agents import coder
from studyhall.graphs.common import BACKEND_RETRY
from studyhall.graphs.state import GraphState
from studyhall.records import AgentStep, ToolCall
from studyhall.tools.answers import last_number


class CodeState(GraphState, total=False):
    convo: list[dict[str, str]]  # the coder's conversation after the system prompt
    code: str | None
    turns: int
    runs: int


def _messages(convo: list[dict[str, str]]) -> list[BaseMessage]:
    cls = {"user": HumanMessage, "assistant": AIMessage}
    return [SystemMessage(coder.SYSTEM)] + [cls[m["role"]](m["content"]) for m in convo]


def build(
    model: BaseChatModel,
    *,
    checkpointer: Any = None,
    max_turns: int = 3,
    max_tokens: int | None = None,
    limits: Any = None,
    **_: Any,
):
    """max_turns: programs the student may write (the first one plus fixes)."""
    base: dict[str, Any] = {"temperature": 0.0} | ({"max_tokens": max_tokens} if max_tokens else {})

    async def write(state: CodeState, config: RunnableConfig) -> dict[str, Any]:
        convo = list(state.get("convo") or [{"role": "user", "content": f"Problem: {state['question'].strip()}"}])
        turn = state.get("turns", 0)
        out = await coder.write(model, _messages(convo), config=config, round=turn, **base)
        convo.append({"role": "assistant", "content": out.step.completion})
        update: dict[str, Any] = {"steps": [out.step.model_dump(mode="json")], "convo": convo, "turns": turn + 1,
                                  "code": out.value.code if out.value else None}
        if out.value and out.value.answer is not None:
            if state.get("runs", 0) == 0 and turn + 1 < max_turns:
                # an answer before any program ran is a guess: ask for the program instead
                convo.append({"role": "user", "content": coder.NEED_CODE})
            else:
                update |= {"answer": out.value.answer, "solution": _solution(convo)}
        return update

    async def run(state: CodeState, config: RunnableConfig) -> dict[str, Any]:
        from studyhall.tools.sandbox import arun_python

        started = time.perf_counter()
        result = await arun_python(state["code"], limits) if limits is not None else await arun_python(state["code"])
        error = None if result.ok else f"{result.error.kind}: {result.error.message}\n{result.stderr}".strip()
        call = ToolCall(tool="python", input=state["code"], output=(result.stdout if result.ok else error or "")[:4000],
                        ok=result.ok, error_kind=None if result.ok else result.error.kind,
                        seconds=time.perf_counter() - started)
        step = AgentStep(role="tool", node="run", completion=call.output, tool_calls=[call],
                         verdict="ok" if result.ok else "tool_error", round=state.get("turns", 1) - 1,
                         seconds=call.seconds)
        convo = list(state["convo"]) + [{"role": "user", "content": coder.output_message(result.stdout, result.value, error)}]
        update: dict[str, Any] = {"steps": [step.model_dump(mode="json")], "convo": convo, "code": None,
                                  "runs": state.get("runs", 0) + 1}
        printed = last_number(result.stdout) if result.ok else None
        if printed is None and result.ok and result.value is not None:
            printed = last_number(result.value)
        if printed is not None:
            update |= {"answer": printed, "solution": _solution(convo)}
        return update

    def after_write(state: CodeState) -> Literal["run", "write", "__end__"]:
        if state.get("code"):
            return "run"
        if state.get("answer") is None and state.get("turns", 0) < max_turns:
            return "write"
        return END

    def after_run(state: CodeState) -> Literal["write", "__end__"]:
        if state.get("answer") is not None or state.get("turns", 0) >= max_turns:
            return END
        return "write"

    graph = StateGraph(CodeState)
    graph.add_node("write", write, retry_policy=BACKEND_RETRY)
    graph.add_node("run", run)
    graph.add_edge(START, "write")
    graph.add_conditional_edges("write", after_write)
    graph.add_conditional_edges("run", after_run)
    return graph.compile(checkpointer=checkpointer, name="code")


def _solution(convo: list[dict[str, str]]) -> str:
    return "\n\n".join(m["content"] for m in convo[1:])


async def solve_with_code(
    model: BaseChatModel, question: str, *, config: RunnableConfig | None = None, **options: Any
) -> tuple[str | None, list[AgentStep]]:
    """Run the code graph once, without a checkpointer (e.g. inside another graph's node)."""
    graph = build(model, **options)
    values = await graph.ainvoke({"question": question, "steps": []}, config={"callbacks": (config or {}).get("callbacks")})
    return values.get("answer"), [AgentStep.model_validate(s) for s in values.get("steps") or []]
