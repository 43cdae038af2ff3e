"""Run a graph over a problem set and keep every outcome: resumable, concurrent, checked three ways.

    summary = run_eval("runs/direct-smol", graph="direct", model="packaged:smollm2-135m-instruct",
                       limit=200, concurrency=16)

Problems run through ``arun_many`` (so the backend batches them) with a SQLite checkpointer
inside the run folder. Each finished problem is checked and appended to ``rows.jsonl`` and
flushed at once, so a kill loses at most the problems in flight; running again with the same
folder skips the ids already there (and finds problems that finished but were not yet
written in the checkpointer; their latency then reads near zero). A folder made with other
settings is refused, not mixed; ``force`` discards it. Errored problems are rows too (counted
in ``errors``) and are not retried on resume.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import platform
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from studyhall.config import Settings, load_settings
from studyhall.errors import InputError
from studyhall.evals import metrics
from studyhall.evals.checkers import CHECKERS, Checkers, CheckResult, checker_versions
from studyhall.evals.datasets import Problem, find_gsm8k, load_gsm8k, load_problem_set, subset
from studyhall.evals.records import EvalConfig, EvalRow, EvalSummary, Session
from studyhall.records import Trajectory

CONFIG, ROWS, SESSIONS, SUMMARY, CHECKPOINTS, TRAJECTORIES = (
    "config.json", "rows.jsonl", "sessions.jsonl", "summary.json", "checkpoints.sqlite", "trajectories.jsonl",
)
_RUN_FILES = (CONFIG, ROWS, SESSIONS, SUMMARY, CHECKPOINTS, CHECKPOINTS + "-wal", CHECKPOINTS + "-shm", TRAJECTORIES)


# ---------------------------------------------------------------------------- the run folder
class RunDir:
    """One eval run on disk: config, append-only rows, sessions, summary, checkpoints."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def config(self) -> EvalConfig | None:
        file = self.path / CONFIG
        if not file.is_file():
            return None
        try:
            return EvalConfig.model_validate_json(file.read_text())
        except ValueError as exc:
            raise InputError(f"{file} is not an eval config: {exc}", hint="use another --out, or --force") from None

    def prepare(self, config: EvalConfig, force: bool = False) -> None:
        """Start a new run here, or check that the one here has exactly these settings."""
        if force:
            for name in _RUN_FILES:
                (self.path / name).unlink(missing_ok=True)
        existing = self.config()
        if existing is None:
            if self.path.is_dir() and any(self.path.iterdir()):
                raise InputError(f"{self.path} exists and is not an eval run folder",
                                 hint="pick a new or empty --out folder")
            self.path.mkdir(parents=True, exist_ok=True)
            _write_atomic(self.path / CONFIG, config.model_dump_json(indent=2))
            return
        diffs = config_differences(existing, config)
        if diffs:
            raise InputError(
                f"{self.path} holds a run made with other settings:\n  " + "\n  ".join(diffs),
                hint="use another --out to keep both, or --force to discard the old rows and start again",
            )

    def rows(self, repair: bool = False) -> list[EvalRow]:
        """Rows in file order. An unfinished last line (a kill mid-write) is ignored, and cut
        off when ``repair`` so the next append starts on a clean line."""
        file = self.path / ROWS
        if not file.is_file():
            return []
        data = file.read_bytes()
        end = data.rfind(b"\n") + 1  # whole lines end here; anything after is unfinished
        rows: list[EvalRow] = []
        for lineno, line in enumerate(data[:end].split(b"\n")[:-1], 1):
            if not line.strip():
                continue
            try:
                rows.append(EvalRow.model_validate_json(line))
            except ValueError as exc:
                raise InputError(f"{file} line {lineno} is not a row: {str(exc)[:200]}",
                                 hint="remove that line, or rerun with --force") from None
        if repair and end < len(data):
            with open(file, "r+b") as f:
                f.truncate(end)
        return rows

    def sessions(self) -> list[Session]:
        file = self.path / SESSIONS
        if not file.is_file():
            return []
        return [Session.model_validate_json(line) for line in file.read_text().splitlines() if line.strip()]

    def add_session(self, concurrency: int) -> Session:
        session = Session(session=len(self.sessions()), started_at=time.time(), concurrency=concurrency,
                          **git_info(), machine=machine_info())
        with open(self.path / SESSIONS, "a") as f:
            f.write(session.model_dump_json() + "\n")
        return session

    def summarize(self, write: bool = True) -> EvalSummary:
        """The summary from the files alone (rows de-duplicated by id, in problem order)."""
        config = self.config()
        if config is None:
            raise InputError(f"{self.path} is not an eval run (no {CONFIG})",
                             hint="pass folders made by `studyhall eval --out ...`")
        unique: dict[str, EvalRow] = {}
        for row in self.rows():
            unique.setdefault(row.id, row)
        rows = sorted(unique.values(), key=lambda r: r.index)
        sessions = self.sessions()
        summary = EvalSummary(
            name=self.path.name,
            complete=len(rows) >= config.problems,
            settings=config,
            environment=sessions[-1] if sessions else None,
            results=metrics.results(rows),
            timing=metrics.timing(rows, sessions),
        )
        if write:
            _write_atomic(self.path / SUMMARY, summary.model_dump_json(indent=2))
        return summary


def config_differences(old: EvalConfig, new: EvalConfig) -> list[str]:
    """Settings that differ. The data file's path is not one: the problems are compared by
    their digest, so a moved or copied file still resumes."""
    a, b = old.model_dump(mode="json"), new.model_dump(mode="json")
    out = []
    for key in (a.keys() | b.keys()) - {"source"}:
        if a.get(key) != b.get(key):
            out.append(f"{key}: {_short(a.get(key))} in the run, {_short(b.get(key))} now")
    return sorted(out)


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


# ---------------------------------------------------------------------------- provenance
def git_info() -> dict[str, Any]:
    """The commit of the studyhall checkout in use, and whether it has local changes."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10)
        if commit.returncode != 0:
            return {"git_commit": None, "git_dirty": None}
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        return {"git_commit": commit.stdout.strip(), "git_dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None}


def machine_info() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    packages = {}
    for name in ("torch", "transformers", "langgraph", "langchain-core", "math-verify"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    return {
        "hostname": platform.node(), "platform": platform.platform(), "cpu": cpu,
        "cores": os.cpu_count(), "python": platform.python_version(), "packages": packages,
    }


# ---------------------------------------------------------------------------- rows
def response_text(traj: Trajectory) -> str:
    """What the checkers read: the graph's solution text (the completion that produced the
    final answer), else the bare final answer."""
    return traj.solution or traj.final_answer or ""


def make_row(traj: Trajectory, problem: Problem, index: int, checkers: Checkers, session: int) -> EvalRow:
    response = response_text(traj)
    if response.strip():
        checks = checkers.check(response, problem.answer)
    else:
        checks = {c: CheckResult(False, None) for c in CHECKERS}
    samples = traj.metadata.get("samples")
    return EvalRow(
        index=index, id=problem.id, question=problem.question, gold=problem.answer,
        prediction=traj.final_answer, response=response,
        extracted={c: r.extracted for c, r in checks.items()},
        correct={c: r.correct for c, r in checks.items()},
        notes={c: r.note for c, r in checks.items() if r.note},
        samples=metrics.sample_answers(samples) if samples is not None else None,
        prompt_tokens=traj.prompt_tokens, completion_tokens=traj.completion_tokens,
        seconds=traj.seconds, steps=len(traj.steps), retries=sum(s.attempts - 1 for s in traj.steps),
        parse_failures=sum(s.verdict == "parse_error" for s in traj.steps),
        error=traj.error, graph=traj.graph, model=traj.model, adapter=traj.adapter,
        session=session, finished_at=time.time(),
    )


class RowWriter:
    """Checks finished trajectories and appends their rows, in a thread of its own so the
    event loop keeps feeding the backend while math-verify works. The whole trajectories go
    to ``trajectories.jsonl`` (training data: `studyhall train sft --data RUN/trajectories.jsonl`),
    each written before its row, so a row never lacks its trajectory."""

    def __init__(self, run: RunDir, problems: dict[str, tuple[int, Problem]], checkers: Checkers,
                 session: int, on_row: Callable[[EvalRow], None] | None = None) -> None:
        self.problems = problems
        self.checkers = checkers
        self.session = session
        self.on_row = on_row
        self._file = open(run.path / ROWS, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._trajectories = open(run.path / TRAJECTORIES, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._queue: queue.Queue[Trajectory | None] = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="eval-rows", daemon=True)
        self._thread.start()

    def submit(self, traj: Trajectory) -> None:
        self._queue.put(traj)

    def _work(self) -> None:
        while (traj := self._queue.get()) is not None:
            if self._error is not None:
                continue
            try:
                index, problem = self.problems[traj.thread_id or traj.id]
                row = make_row(traj, problem, index, self.checkers, self.session)
                self._trajectories.write(traj.model_dump_json() + "\n")
                self._trajectories.flush()
                self._file.write(row.model_dump_json() + "\n")
                self._file.flush()
                if self.on_row:
                    self.on_row(row)
            except BaseException as exc:  # surfaced by close(); later rows are not written
                self._error = exc

    def close(self) -> None:
        """Write everything submitted so far, then stop."""
        self._queue.put(None)
        self._thread.join()
        self._file.close()
        self._trajectories.close()
        if self._error is not None:
            raise self._error


# ---------------------------------------------------------------------------- the run
def problems_digest(problems: Sequence[Problem]) -> str:
    h = hashlib.sha256()
    for p in problems:
        h.update(json.dumps([p.id, p.question, p.answer]).encode() + b"\n")
    return h.hexdigest()


def load_shots(count: int, data: str | Path | None, settings: Settings) -> list[Problem]:
    """The first ``count`` worked GSM8K train problems (from --data when it is a GSM8K folder)."""
    if count <= 0:
        return []
    folder = find_gsm8k(data) if data and Path(data).is_dir() else None
    train = load_gsm8k(folder or settings.gsm8k_path, "train", settings.cache_dir)
    shots = [p for p in train.problems if p.solution][:count]
    if len(shots) < count:
        raise InputError(f"only {len(shots)} worked examples for --shots {count}")
    return shots


def _bind_adapter(chat: Any, adapter: str, settings: Settings) -> Any:
    """Every call of the run uses ``adapter``: a name for an OpenAI-compatible server (which
    serves adapters under their own names), else a folder or registered name, resolved and
    checked here so a typo fails before the first problem."""
    from studyhall.agents.base import unbind
    from studyhall.serving.openai_backend import OpenAIChatModel

    if isinstance(unbind(chat)[0], OpenAIChatModel):
        return chat.bind(adapter=adapter)
    from studyhall.training.adapters import resolve_adapter

    return chat.bind(adapter=str(resolve_adapter(adapter, settings)))


class _Progress:
    """A rich progress bar with the running accuracy per checker and problems/s."""

    def __init__(self, total: int, done: Sequence[EvalRow], console: Any = None) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.right = {c: sum(r.correct.get(c, False) for r in done) for c in CHECKERS}
        self.count = len(done)
        self.new = 0
        self.started = time.perf_counter()
        self.bar = Progress(
            TextColumn("[bold]eval"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[acc]}"), TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False,
        )
        self.task = self.bar.add_task("eval", total=total, completed=len(done), acc=self._acc(), rate="")
        self.bar.start()

    def _acc(self) -> str:
        if not self.count:
            return ""
        return "  ".join(f"{c} {100 * self.right[c] / self.count:4.1f}%" for c in CHECKERS)

    def row(self, row: EvalRow) -> None:
        self.count += 1
        self.new += 1
        for c in CHECKERS:
            self.right[c] += row.correct.get(c, False)
        rate = self.new / max(time.perf_counter() - self.started, 1e-9)
        self.bar.update(self.task, advance=1, acc=self._acc(), rate=f"{rate:.2f} problems/s")

    def stop(self) -> None:
        self.bar.stop()


async def arun_eval(
    out: str | Path,
    *,
    data: str | Path | None = None,
    split: str = "test",
    question_field: str = "question",
    answer_field: str = "answer",
    limit: int | None = None,
    seed: int | None = None,
    graph: str | None = None,
    graph_options: dict[str, Any] | None = None,
    model: Any = None,
    adapter: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    system_prompt: str | None = None,
    shots: int = 0,
    concurrency: int = 8,
    math_verify_timeout: float = 10.0,
    force: bool = False,
    progress: bool = False,
    console: Any = None,
    settings: Settings | None = None,
    checkers: Checkers | None = None,
) -> EvalSummary:
    """Evaluate ``graph`` on a problem set into the folder ``out`` (see the module docstring).

    ``model`` is a spec string (default: the configured model) or a loaded chat model;
    ``checkers`` a started Checkers to share across runs (its math-verify worker takes a few
    seconds to start).
    """
    from studyhall.agents import student
    from studyhall.graphs.registry import graph_names

    settings = settings or load_settings()
    graph = graph or settings.graph
    if graph not in graph_names():
        raise InputError(f"unknown graph {graph!r}", hint="graphs: " + ", ".join(graph_names()))
    if concurrency < 1:
        raise InputError(f"--concurrency must be at least 1, not {concurrency}")
    chat = None if model is None or isinstance(model, str) else model
    if chat is not None:
        from studyhall.graphs.runner import model_name

        spec = model_name(chat)
    else:
        spec = model or settings.model
    data = data if data is not None else settings.gsm8k_path
    problem_set = load_problem_set(data, split=split, question_field=question_field,
                                   answer_field=answer_field, cache_dir=settings.cache_dir)
    problems = subset(problem_set.problems, limit, seed)
    if not problems:
        reasons = "; ".join(f"line {s.line}: {s.reason}" for s in problem_set.skipped[:3])
        raise InputError(f"no usable problems in {problem_set.source}"
                         + (f" ({len(problem_set.skipped)} records skipped: {reasons})" if reasons else ""),
                         hint=f"each line needs a {question_field!r} and a numeric {answer_field!r}")
    examples = load_shots(shots, data, settings)
    config = EvalConfig(
        dataset=problem_set.name, source=str(Path(problem_set.source).resolve()),
        split=None if data is not None and Path(data).is_file() else split,
        question_field=question_field, answer_field=answer_field, limit=limit, seed=seed,
        problems=len(problems), problems_digest=problems_digest(problems), skipped=problem_set.skipped,
        graph=graph, graph_options=dict(graph_options or {}), model=spec, adapter=adapter,
        temperature=temperature, max_tokens=max_tokens or settings.max_new_tokens,
        system_prompt=system_prompt or student.SYSTEM, shots=len(examples),
        shot_ids=[p.id for p in examples], checkers=checker_versions(math_verify_timeout),
        math_verify_timeout=math_verify_timeout,
    )
    run = RunDir(out)
    run.prepare(config, force=force)
    done_rows = run.rows(repair=True)
    done = {r.id for r in done_rows}
    order = {p.id: (i, p) for i, p in enumerate(problems)}
    pending = [p for p in problems if p.id not in done]
    if pending:
        await _run_pending(run, config, pending, order, done_rows, examples, chat, concurrency,
                           progress, console, settings, checkers)
    return run.summarize()


async def _run_pending(
    run: RunDir, config: EvalConfig, pending: list[Problem], order: dict[str, tuple[int, Problem]],
    done_rows: list[EvalRow], examples: list[Problem], chat: Any, concurrency: int,
    progress: bool, console: Any, settings: Settings, checkers: Checkers | None,
) -> None:
    from studyhall.api import build_graph, load_model
    from studyhall.graphs.checkpoint import open_checkpointer
    from studyhall.graphs.runner import arun_many, model_name

    if chat is None:
        chat = load_model(config.model, settings)
        warm = getattr(chat, "warm_up", None)
        if warm:
            if progress:
                from rich.console import Console

                with (console or Console(stderr=True)).status(f"loading {config.model} ...", spinner="dots"):
                    await asyncio.to_thread(warm)
            else:
                await asyncio.to_thread(warm)
    if config.adapter:
        chat = _bind_adapter(chat, config.adapter, settings)
    saver = open_checkpointer(run.path / CHECKPOINTS)
    options: dict[str, Any] = {"max_tokens": config.max_tokens, "system_prompt": config.system_prompt}
    if config.temperature is not None:  # else each graph's own: greedy, or vote's sampling temperature
        options["temperature"] = config.temperature
    compiled = build_graph(config.graph, chat, checkpointer=saver, settings=settings,
                           **(options | config.graph_options))
    shots = [{"question": p.question, "solution": p.solution, "answer": p.answer} for p in examples]
    items = [{"question": p.question, "gold": p.answer, "thread_id": p.id, "examples": shots}
             for p in pending]
    bar = _Progress(config.problems, done_rows, console) if progress else None
    own = checkers is None
    if checkers is None:
        checkers = Checkers(config.math_verify_timeout)
    checkers.math_verify.timeout = config.math_verify_timeout
    try:
        checkers.math_verify.start()
        session = run.add_session(concurrency)
        writer = RowWriter(run, order, checkers, session.session, on_row=bar.row if bar else None)
        try:
            await arun_many(compiled, items, graph_name=config.graph, model=model_name(chat),
                            adapter=config.adapter, concurrency=concurrency, on_done=writer.submit)
        finally:
            writer.close()
    finally:
        if own:
            checkers.math_verify.close()
        if bar:
            bar.stop()
        saver.close()


def rescore(out: str | Path, *, math_verify_timeout: float | None = None, checkers: Checkers | None = None) -> EvalSummary:
    """Check a finished run's stored responses again with the current checkers (after a
    checker changed): rows, the config's checker versions and the summary are rewritten
    atomically; nothing is generated again."""
    run = RunDir(out)
    config = run.config()
    if config is None:
        raise InputError(f"{run.path} is not an eval run (no {CONFIG})", hint="pass a folder made by `studyhall eval --out`")
    timeout = math_verify_timeout or config.math_verify_timeout
    own = checkers is None
    checkers = checkers or Checkers(timeout)
    try:
        checkers.math_verify.start()
        rows = []
        for row in run.rows():
            checks = checkers.check(row.response, row.gold) if row.response.strip() else \
                {c: CheckResult(False, None) for c in CHECKERS}
            rows.append(row.model_copy(update={
                "extracted": {c: r.extracted for c, r in checks.items()},
                "correct": {c: r.correct for c, r in checks.items()},
                "notes": {c: r.note for c, r in checks.items() if r.note},
            }))
    finally:
        if own:
            checkers.math_verify.close()
    config = config.model_copy(update={"checkers": checker_versions(timeout), "math_verify_timeout": timeout})
    _write_atomic(run.path / ROWS, "".join(r.model_dump_json() + "\n" for r in rows))
    _write_atomic(run.path / CONFIG, config.model_dump_json(indent=2))
    return run.summarize()


def run_eval(out: str | Path, **kwargs: Any) -> EvalSummary:
    """Synchronous ``arun_eval``."""
    return asyncio.run(arun_eval(out, **kwargs))
