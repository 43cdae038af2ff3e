"""Rich rendering shared by the CLI commands: agent steps, answers, trajectories."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.text import Text

ROLE_STYLE = {
    "student": "cyan", "knowledge": "magenta", "verifier": "yellow", "teacher": "green",
    "pioneer": "blue", "observer": "bright_blue", "evaluator": "yellow", "optimizer": "green",
    "coder": "cyan",
}


def render_step(console: Console, node: str, step: dict[str, Any], *, show_body: bool = True) -> None:
    role = step.get("role", node)
    style = ROLE_STYLE.get(role, "white")
    title = f"[bold {style}]{role}[/] [dim]{node}"
    if step.get("sample"):
        title += f" · sample {step['sample']}"
    if step.get("round"):
        title += f" · round {step['round']}"
    title += f" · {step.get('completion_tokens', 0)} tok · {step.get('seconds', 0):.1f}s[/]"
    verdict = step.get("verdict", "ok")
    if verdict != "ok":
        title += f" [red]{verdict}[/]"
    body = Text(step.get("completion", "").strip() or "(empty)", style="dim" if show_body else "")
    for call in step.get("tool_calls") or []:
        body.append(f"\n[{call.get('tool')}] {call.get('output', '')[:400]}", style="italic")
    console.print(Panel(body, title=title, title_align="left", border_style=style, expand=True))


def render_answer(console: Console, traj: Any) -> None:
    answer = traj.final_answer if traj.final_answer is not None else "(none)"
    parts = [f"[bold green]Answer: {answer}[/]"]
    if traj.confidence is not None:
        parts.append(f"confidence {traj.confidence:.2f}")
    parts.append(f"{traj.total_tokens} tokens")
    parts.append(f"{traj.seconds:.1f}s")
    if traj.gold_answer is not None:
        mark = "[green]correct[/]" if traj.correct else "[red]wrong[/]"
        parts.append(f"gold {traj.gold_answer} {mark}")
    if traj.error:
        parts.append(f"[red]error: {traj.error}[/]")
    console.print("  ".join(parts))


def render_extras(console: Console, traj: Any) -> None:
    """What batch-level graphs produce beside an answer: new problems, the best prompt."""
    meta = traj.metadata
    for p in meta.get("new_problems") or []:
        console.print(Panel(f"{p['question']}\n[dim]{p['solution']}[/]\nAnswer: {p['answer']}",
                            title="[green]new problem (checked)", title_align="left", border_style="green"))
    if meta.get("new_problems") == [] or meta.get("rejected"):
        console.print(f"[dim]{len(meta.get('rejected') or [])} teacher problems rejected[/]")
    if "best_prompt" in meta:
        history = ", ".join(f"{h['score']:.2f}" for h in meta.get("history") or [])
        console.print(Panel(meta["best_prompt"], title=f"[green]best prompt · score {meta['best_score']:.2f}",
                            subtitle=f"scores in order: {history}", title_align="left", border_style="green"))
