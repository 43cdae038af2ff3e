"""The optimizer (PE2 / EduPlanner): rewrites a system prompt from the evaluator's score
and failure feedback. Proposals are sampled, so one call can give several candidates."""

from __future__ import annotations

from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableConfig

from studyhall.agents.base import AgentOutput, ParseError, messages, sample_agent
from studyhall.agents.evaluator import Evaluation

SYSTEM = (
    "You improve instructions given to a math student. You get the current instruction, its "
    "score on practice problems, and feedback on the mistakes it led to. Write one improved "
    "instruction of at most five sentences that prevents those mistakes. It must still tell "
    "the student to end with a final line 'Answer: <number>'. Reply with the new instruction "
    "only, starting with 'Instruction:'."
)
FORMAT_LINE = "End with a final line of the form: Answer: <number>"


def parse(text: str) -> str:
    body = text.split("Instruction:", 1)[-1].strip().strip('"').strip()
    body = body.split("\n\n", 1)[0].strip() if len(body) > 1200 else body
    if len(body) < 20:
        raise ParseError("no instruction found")
    if "Answer:" not in body:
        body = f"{body.rstrip()} {FORMAT_LINE}"
    return body[:1500]


def user_prompt(evaluation: Evaluation) -> str:
    notes = "\n".join(
        f"- Problem: {f.question[:300]}\n  Correct: {f.gold}; student said: {f.prediction}\n  Feedback: {f.feedback}"
        for f in evaluation.failures
    ) or "- (no failures recorded)"
    return (
        f"Current instruction:\n{evaluation.prompt}\n\n"
        f"Score: {evaluation.correct}/{evaluation.total} correct\n\nFeedback on mistakes:\n{notes}"
    )


async def propose(
    model: BaseChatModel,
    evaluation: Evaluation,
    *,
    n: int = 2,
    config: RunnableConfig | None = None,
    round: int = 0,
    **sampling: Any,
) -> list[AgentOutput[str]]:
    sampling.setdefault("temperature", 0.8)
    return await sample_agent(model, messages(SYSTEM, user_prompt(evaluation)), parse, n=n,
                              role="optimizer", node="optimizer", config=config, round=round, **sampling)
