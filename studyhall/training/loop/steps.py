"""The loop's real steps: collect with the champion, build a dataset, train a candidate,
evaluate candidate and champion on the held-out dev set.

Files, per state folder (``config.state_dir``)::

    dev.jsonl                       the dev set: fixed once, never collected, never trained on
    teacher-problems.jsonl          problems the teach graph wrote and checked (join the pool)
    adapters/iter-NNNN/             each iteration's candidate adapter (and its checkpoints)
    iterations/NNNN/problems.json   the problems this iteration drew (fixed before any run)
    iterations/NNNN/trajectories.jsonl         every run, appended as it finishes
    iterations/NNNN/collect-checkpoints.sqlite LangGraph checkpoints of those runs
    iterations/NNNN/train-data.jsonl           what the trainer reads (new + replayed runs)
    iterations/NNNN/eval-candidate/, eval-champion/   eval run folders (resumable)

Every step can be killed and run again: the drawn problems are written before the runs, a
run's thread id is (iteration, graph, problem) so a finished run is skipped and an
interrupted one resumes from its checkpoint, the trainer resumes from its checkpoints, and
the evals resume from their rows. Trajectories are never lost or duplicated.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

from studyhall.config import Settings, load_settings
from studyhall.errors import ConfigError, InputError
from studyhall.evals.datasets import Problem, load_problem_set, subset
from studyhall.records import Trajectory
from studyhall.training.loop.config import LoopConfig
from studyhall.training.loop.runner import IterationContext, adapter_is_complete

DEV_FILE = "dev.jsonl"
TEACHER_FILE = "teacher-problems.jsonl"
PROBLEMS_FILE = "problems.json"
TRAJECTORIES_FILE = "trajectories.jsonl"
TRAIN_FILE = "train-data.jsonl"
EVAL_ADAPTER_FILE = "adapter.json"  # in each eval folder: which adapter (and its fingerprint) it scored


def qkey(text: str) -> str:
    from studyhall.training.datasets import qkey as _qkey

    return _qkey(text)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class TrajectoryLog:
    """An append-only JSONL of trajectories, one per thread id. Opening it drops an
    unfinished last line (a kill mid-write); ``add`` skips thread ids already there."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.items: dict[str, Trajectory] = {}
        if path.is_file():
            data = path.read_bytes()
            end = data.rfind(b"\n") + 1
            for line in data[:end].split(b"\n"):
                if line.strip():
                    t = Trajectory.model_validate_json(line)
                    self.items.setdefault(t.thread_id or t.id, t)
            if end < len(data):
                with open(path, "r+b") as f:
                    f.truncate(end)
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def add(self, traj: Trajectory) -> None:
        key = traj.thread_id or traj.id
        if key in self.items:
            return
        self.items[key] = traj
        self._file.write(traj.model_dump_json() + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_log(path: Path) -> list[Trajectory]:
    if not path.is_file():
        return []
    log = TrajectoryLog(path)
    log.close()
    return list(log.items.values())


class RealSteps:
    """collect / build / train / evaluate with the real graphs, trainer and harness."""

    def __init__(self, config: LoopConfig, settings: Settings | None = None) -> None:
        self.config = config
        self.settings = settings or load_settings(model=config.model)
        self.spec = config.model or self.settings.model
        self.state_dir = Path(config.state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._chat: Any = None
        self._engines: list[Any] = []
        self._tag = hashlib.sha256(str(self.state_dir.resolve()).encode()).hexdigest()[:8]

    # ------------------------------------------------------------------ shared pieces
    def chat(self) -> Any:
        """The base chat model, loaded once per process (adapters are bound per use)."""
        if self._chat is None:
            from studyhall.api import load_model

            before = {id(e) for e in _loaded_engines()}
            self._chat = load_model(self.spec, self.settings, adapter=None)
            warm = getattr(self._chat, "warm_up", None)
            if warm:
                warm()
            self._engines = [e for e in _loaded_engines() if id(e) not in before]
        return self._chat

    def release(self) -> None:
        """Free the model this object loaded (the trainer loads its own copy); an engine
        someone else in the process loaded first is left alone."""
        self._chat = None
        if self._engines:
            from studyhall.serving.transformers_backend import release_engines

            release_engines(self._engines)
            self._engines = []
        gc.collect()

    def problems(self) -> tuple[list[Problem], list[Problem]]:
        """(pool, dev): the dev set is fixed in ``dev.jsonl`` the first time; the pool is the
        rest of the split (minus anything that reads like a dev question) plus the teacher's
        problems."""
        c = self.config
        ps = load_problem_set(c.collect.data, split=c.collect.split, cache_dir=self.settings.cache_dir)
        if len(ps.problems) <= c.eval.dev_size:
            raise InputError(f"{ps.source} has {len(ps.problems)} problems: too few for a dev set of "
                             f"{c.eval.dev_size} plus problems to collect", hint="lower eval.dev_size")
        dev = subset(ps.problems, c.eval.dev_size, c.eval.dev_seed)
        dev_file = self.state_dir / DEV_FILE
        if dev_file.is_file():
            fixed = [Problem.model_validate_json(line) for line in dev_file.read_text().splitlines() if line.strip()]
            if [p.id for p in fixed] != [p.id for p in dev]:
                raise ConfigError(
                    f"the dev set in {dev_file} is not the one the config draws now (data, split, "
                    "eval.dev_size or eval.dev_seed changed)",
                    hint="keep those settings for this state_dir, or start a new state_dir",
                )
            dev = fixed
        else:
            _write_atomic(dev_file, "".join(p.model_dump_json() + "\n" for p in dev))
        held = {p.id for p in dev} | {qkey(p.question) for p in dev}
        pool = [p for p in ps.problems if p.id not in held and qkey(p.question) not in held]
        pool += [p for p in self.teacher_problems() if qkey(p.question) not in held]
        return pool, dev

    def teacher_problems(self) -> list[Problem]:
        path = self.state_dir / TEACHER_FILE
        if not path.is_file():
            return []
        return [Problem.model_validate(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]

    def earlier(self, n: int) -> list[Path]:
        """Folders of the iterations before n."""
        root = self.state_dir / "iterations"
        return sorted(p for p in root.glob("[0-9]*") if p.is_dir() and p.name.isdigit() and int(p.name) < n)

    def draw(self, ctx: IterationContext, pool: list[Problem]) -> list[Problem]:
        """This iteration's problems: fixed on disk before anything runs, so a re-run draws
        the same. Deterministic in (seed, n); problems not collected before come first."""
        path = ctx.dir / PROBLEMS_FILE
        if path.is_file():
            return [Problem.model_validate(p) for p in json.loads(path.read_text())]
        seen: set[str] = set()
        for folder in self.earlier(ctx.n):
            if (folder / PROBLEMS_FILE).is_file():
                seen |= {p["id"] for p in json.loads((folder / PROBLEMS_FILE).read_text())}
        rng = random.Random(f"{self.config.seed}:{ctx.n}")
        fresh = [p for p in pool if p.id not in seen]
        again = [p for p in pool if p.id in seen]
        rng.shuffle(fresh)
        rng.shuffle(again)
        drawn = (fresh + again)[: self.config.collect.problems]
        _write_atomic(path, json.dumps([p.model_dump() for p in drawn], indent=1))
        return drawn

    def thread_id(self, n: int, graph: str, problem_id: str) -> str:
        return f"loop-{self._tag}-{n:04d}-{graph}-{problem_id}"

    def train_config(self, ctx: IterationContext) -> Any:
        from studyhall.training.config import make_config

        c = self.config
        overrides: dict[str, Any] = {"data.skip_bad_rows": True}
        overrides |= dict(c.train.options)
        overrides |= {"model": self.spec, "parent": ctx.champion_adapter}
        if c.data.method == "sft" and c.data.masked_thought:
            overrides["masked_thought"] = c.data.masked_thought
        return make_config(c.data.method, overrides)

    # ------------------------------------------------------------------ collect
    def collect(self, ctx: IterationContext) -> dict[str, Any]:
        from studyhall.graphs.checkpoint import open_checkpointer
        from studyhall.memory.store import EpisodicMemory
        from studyhall.memory.trajectory_store import TrajectoryStore

        pool, dev = self.problems()
        drawn = self.draw(ctx, pool)
        seen_before = self._collected_before(ctx.n)
        log = TrajectoryLog(ctx.dir / TRAJECTORIES_FILE)
        saver = open_checkpointer(ctx.dir / "collect-checkpoints.sqlite")
        memory = EpisodicMemory.open(self.settings)
        try:
            before = len(log.items)
            asyncio.run(self._collect_runs(ctx, drawn, log, saver, memory))
            trajs = list(log.items.values())
        finally:
            log.close()
            saver.close()
        with TrajectoryStore(self.settings.trajectory_db) as store:  # upserts: safe to repeat
            store.put(trajs, source=f"loop {self.state_dir.name} iteration {ctx.n}")
        solved = [t for t in trajs if t.graph != "teach"]
        episodes = memory.add_trajectories([t for t in solved if t.correct and t.error is None])
        dev_keys = {qkey(p.question) for p in dev}
        taught = self._keep_teacher_problems(ctx.n, [t for t in trajs if t.graph == "teach"], dev_keys)
        result = {
            "problems": len(drawn),
            "new_problems": sum(p.id not in seen_before for p in drawn),
            "trajectories": len(solved),
            "correct": sum(bool(t.correct) for t in solved),
            "errors": sum(t.error is not None for t in solved),
            "teach_runs": len(trajs) - len(solved),
            "teacher_problems": taught,
            "resumed_with": before,
            "episodes": episodes,
            "trajectories_file": str(ctx.dir / TRAJECTORIES_FILE),
            "trajectory_store": str(self.settings.trajectory_db),
        }
        ctx.log(f"[iteration {ctx.n}] collect: {result['trajectories']} runs on {len(drawn)} problems "
                f"({result['new_problems']} new), {result['correct']} correct, {taught} teacher problems kept"
                + (f", champion {ctx.champion_adapter}" if ctx.champion_adapter else ", base model"))
        return result

    def _collected_before(self, n: int) -> set[str]:
        out: set[str] = set()
        for folder in self.earlier(n):
            if (folder / PROBLEMS_FILE).is_file():
                out |= {p["id"] for p in json.loads((folder / PROBLEMS_FILE).read_text())}
        return out

    async def _collect_runs(self, ctx: IterationContext, drawn: list[Problem], log: TrajectoryLog,
                            saver: Any, memory: Any) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        from studyhall.api import adapter_name, build_graph
        from studyhall.graphs.runner import arun_many, model_name

        c = self.config.collect
        chat = self.chat()
        if ctx.champion_adapter:
            chat = chat.bind(adapter=ctx.champion_adapter)
        common: dict[str, Any] = {"max_tokens": c.max_tokens} if c.max_tokens else {}
        by_id = {p.id: p for p in drawn}
        bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TimeElapsedColumn(), console=Console(stderr=True), transient=False)

        async def run(graph: str, items: list[dict[str, Any]], options: dict[str, Any]) -> None:
            pending = [i for i in items if i["thread_id"] not in log.items]
            if not pending:
                return
            if options.get("retrieve"):
                options = {"memory": memory, **options}
            compiled = build_graph(graph, chat, checkpointer=saver, settings=self.settings, **common, **options)
            task = bar.add_task(f"collect {graph}", total=len(items), completed=len(items) - len(pending))

            def done(traj: Trajectory) -> None:
                log.add(traj)
                bar.advance(task)

            await arun_many(compiled, pending, graph_name=graph, model=model_name(chat), adapter=adapter_name(chat),
                            concurrency=c.concurrency, on_done=done)

        def items(graph: str, problems: list[Problem]) -> list[dict[str, Any]]:
            return [{"question": p.question, "gold": p.answer, "thread_id": self.thread_id(ctx.n, graph, p.id),
                     "metadata": {"source": "loop", "iteration": ctx.n, "problem_id": p.id}} for p in problems]

        bar.start()
        try:
            for graph in c.graphs:
                await run(graph, items(graph, drawn), dict(c.graph_options.get(graph, {})))
            if c.teach and c.teach_max:
                wrong: list[str] = []
                for t in log.items.values():
                    pid = t.metadata.get("problem_id")
                    if t.graph != "teach" and t.correct is False and pid in by_id and pid not in wrong:
                        wrong.append(pid)
                teach = {"per_problem": c.teach_per_problem, "dedupe": memory.drop_near_duplicates,
                         **c.graph_options.get("teach", {})}
                await run("teach", items("teach", [by_id[p] for p in wrong[: c.teach_max]]), teach)
        finally:
            bar.stop()

    def _keep_teacher_problems(self, n: int, teach_runs: list[Trajectory], dev_keys: set[str]) -> int:
        """Add the teacher's checked problems to the pool file (rewritten atomically, one per
        question); returns how many this iteration contributed."""
        known = {qkey(p.question): p for p in self.teacher_problems()}
        mine: set[str] = set()
        for t in teach_runs:
            for p in t.metadata.get("new_problems") or []:
                if not isinstance(p, dict) or not p.get("question") or p.get("answer") is None:
                    continue
                key = qkey(p["question"])
                if key in dev_keys:
                    continue
                mine.add(key)
                if key in known:
                    continue
                pid = "teach-" + hashlib.sha256(key.encode()).hexdigest()[:12]
                known[key] = Problem(id=pid, question=p["question"].strip(), answer=str(p["answer"]),
                                     solution=p.get("solution"))
        if known:
            _write_atomic(self.state_dir / TEACHER_FILE, "".join(p.model_dump_json() + "\n" for p in known.values()))
        return len(mine)

    # ------------------------------------------------------------------ build
    def build(self, ctx: IterationContext) -> dict[str, Any]:
        from studyhall.training.datasets import build_dataset

        c = self.config
        new = read_log(ctx.dir / TRAJECTORIES_FILE)
        old = [t for folder in self.earlier(ctx.n) for t in read_log(folder / TRAJECTORIES_FILE)]
        k = min(len(old), round(c.data.replay * len(new)))
        replay = random.Random(f"{c.seed}:{ctx.n}:replay").sample(sorted(old, key=lambda t: t.id), k)
        dev_keys = {qkey(p.question) for p in self._dev()}
        rows = [_without_dev(t, dev_keys) for t in new + replay if qkey(t.question) not in dev_keys]
        path = ctx.dir / TRAIN_FILE
        _write_atomic(path, "".join(t.model_dump_json() + "\n" for t in rows))
        base = {"data": str(path), "method": c.data.method, "trajectories": len(new), "replayed": k}
        try:
            _, report = build_dataset(c.data.method, path, self.train_config(ctx).data)
        except InputError as exc:
            ctx.log(f"[iteration {ctx.n}] build: no {c.data.method} rows ({exc})")
            return {**base, "rows": 0, "data_hash": None, "reason": str(exc)}
        ctx.log(f"[iteration {ctx.n}] build: {report.summary()}; {k} replayed trajectories")
        return {**base, "rows": report.rows, "data_hash": report.data_hash, "questions": report.questions,
                "sources": report.sources}

    def _dev(self) -> list[Problem]:
        path = self.state_dir / DEV_FILE
        if not path.is_file():
            return self.problems()[1]
        return [Problem.model_validate_json(line) for line in path.read_text().splitlines() if line.strip()]

    # ------------------------------------------------------------------ train
    def train(self, ctx: IterationContext) -> dict[str, Any]:
        from rich.console import Console

        from studyhall.training.adapters import read_metadata
        from studyhall.training.runs import train

        built = ctx.results["build"]
        if not built.get("rows"):
            reason = f"no training rows: {built.get('reason', 'empty dataset')}"
            ctx.log(f"[iteration {ctx.n}] train: skipped, {reason}")
            return {"adapter": None, "metrics": {}, "reason": reason}
        self.release()
        config = self.train_config(ctx)
        out = self.state_dir / "adapters" / f"iter-{ctx.n:04d}"
        meta = read_metadata(out) if adapter_is_complete(out) else None
        if meta is None or meta.data_hash != built["data_hash"] or meta.config != config.public():
            meta = train(config.method, built["data"], out, config=config, settings=self.settings,
                         overwrite=True, console=Console(stderr=True))
        ctx.log(f"[iteration {ctx.n}] train: {config.method} {meta.metrics.get('steps')} steps on {meta.data_size} rows"
                f" from {meta.parent or 'the base model'} -> {out}")
        return {"adapter": str(out), "parent": meta.parent, "metrics": meta.metrics, "data_hash": meta.data_hash}

    # ------------------------------------------------------------------ evaluate
    def evaluate(self, ctx: IterationContext) -> dict[str, Any]:
        from rich.console import Console

        from studyhall.evals.checkers import Checkers
        from studyhall.evals.harness import RunDir, arun_eval

        e = self.config.eval
        candidate = ctx.results["train"].get("adapter")
        if candidate is None:
            ctx.log(f"[iteration {ctx.n}] evaluate: skipped, no candidate")
            return {"candidate": {}, "champion": {}, "checker": e.checker, "skipped": "no candidate adapter"}
        self._dev()
        chat = self.chat()
        checkers = Checkers()
        console = Console(stderr=True)
        scores: dict[str, dict[str, bool]] = {}
        reused: dict[str, str] = {}

        def run(out: Path, adapter: str | None) -> None:
            asyncio.run(arun_eval(
                out, data=self.state_dir / DEV_FILE, graph=e.graph, graph_options=e.graph_options, model=chat,
                adapter=adapter, max_tokens=e.max_tokens, concurrency=e.concurrency, progress=True,
                console=console, settings=self.settings, checkers=checkers,
            ))

        try:
            for who, adapter in (("candidate", candidate), ("champion", ctx.champion_adapter)):
                out = ctx.dir / f"eval-{who}"
                earlier = None if out.exists() else self._earlier_eval(ctx.n, adapter)
                if earlier is not None:
                    # The same adapter was already evaluated on this dev set (the champion is
                    # the candidate of the iteration that promoted it): start from its rows.
                    # The harness refuses the copy if any setting differs; then run afresh.
                    tmp = out.with_name(out.name + ".copy")
                    shutil.rmtree(tmp, ignore_errors=True)
                    shutil.copytree(earlier, tmp)
                    os.replace(tmp, out)
                    try:
                        run(out, adapter)
                        reused[who] = str(earlier)
                    except InputError:
                        shutil.rmtree(out)
                        run(out, adapter)
                else:
                    run(out, adapter)
                _write_atomic(out / EVAL_ADAPTER_FILE, json.dumps({"adapter": adapter, "fingerprint": _fingerprint(adapter)}))
                rows: dict[str, bool] = {}
                for row in RunDir(out).rows():
                    rows.setdefault(row.id, bool(row.correct.get(e.checker)))
                scores[who] = rows
        finally:
            checkers.math_verify.close()
        acc = {who: (sum(s.values()) / len(s) if s else None) for who, s in scores.items()}
        ctx.log(f"[iteration {ctx.n}] evaluate ({e.checker} checker, {len(scores['candidate'])} dev problems): "
                f"candidate {acc['candidate']:.3f}, champion {acc['champion']:.3f}"
                + "".join(f"; {who} rows reused from {path}" for who, path in reused.items()))
        return {"candidate": scores["candidate"], "champion": scores["champion"], "checker": e.checker,
                "candidate_accuracy": acc["candidate"], "champion_accuracy": acc["champion"],
                "champion_adapter": ctx.champion_adapter, "reused": reused}

    def _earlier_eval(self, n: int, adapter: str | None) -> Path | None:
        """A finished dev eval of the same adapter (unchanged since) from an earlier iteration."""
        mine = _fingerprint(adapter)
        for folder in reversed(self.earlier(n)):
            for who in ("candidate", "champion"):
                out = folder / f"eval-{who}"
                try:
                    seen = json.loads((out / EVAL_ADAPTER_FILE).read_text())
                    done = json.loads((out / "summary.json").read_text()).get("complete")
                except (OSError, ValueError):
                    continue
                if done and seen.get("adapter") == adapter and seen.get("fingerprint") == mine:
                    return out
        return None


def _fingerprint(adapter: str | None) -> str | None:
    if adapter is None:
        return None
    from studyhall.training.adapters import adapter_fingerprint

    return adapter_fingerprint(adapter)


def _loaded_engines() -> list[Any]:
    import sys

    backend = sys.modules.get("studyhall.serving.transformers_backend")
    return backend.loaded_engines() if backend is not None else []


def _without_dev(t: Trajectory, dev_keys: set[str]) -> Trajectory:
    """A trajectory minus any teacher-written problem that reads like a dev question."""
    new = t.metadata.get("new_problems")
    if not new:
        return t
    kept = [p for p in new if not (isinstance(p, dict) and qkey(str(p.get("question", ""))) in dev_keys)]
    return t if len(kept) == len(new) else t.model_copy(update={"metadata": {**t.metadata, "new_problems": kept}})
