"""EpisodicMemory against an embedded folder and a real `chroma run` server (see conftest)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from datetime import UTC, datetime

import numpy as np
import pytest

from studyhall.errors import BackendError, ConfigError, InputError
from studyhall.memory.episodes import Episode
from studyhall.memory.store import EpisodicMemory
from studyhall.records import AgentStep, Trajectory

from ..conftest import REPO, free_port
from .conftest import ChromaServer
from .test_embeddings import _variant
from .writer import episodes as synthetic
from .writer import vectors as synthetic_vectors


def ep(question: str, solution: str, correct: bool | None = True, **kw) -> Episode:
    return Episode(question=question, solution=solution, answer=kw.pop("answer", "1"), correct=correct,
                   graph=kw.pop("graph", "direct"), agent=kw.pop("agent", "student"), model="fake", **kw)


APPLES = [
    ep("Tom has 3 apples and buys 5 more. How many apples does he have?", "3 + 5 = 8", answer="8"),
    ep("Anna has 4 apples and buys 2 more. How many apples does she have?", "4 + 2 = 6", answer="6", correct=False),
    ep("Sam has 7 apples and eats 2. How many apples are left?", "7 - 2 = 5", answer="5"),
    ep("A train travels 60 km per hour for 3 hours. How far does it go?", "60 * 3 = 180", answer="180"),
    ep("A shirt costs $20 and is 25% off. What is the sale price?", "20 * 0.75 = 15", answer="15", correct=None),
]


def writer(target: dict, *args: str) -> list[str]:
    where = ["--path", str(target["path"])] if "path" in target else ["--url", target["url"]]
    return [sys.executable, "-m", "tests.memory.writer", *where,
            "--collection", target.get("collection", "episodes"), *args]


def test_add_get_and_writing_twice_keeps_one_copy(target):
    mem = EpisodicMemory.open(**target)
    assert mem.count() == 0 and mem.get("nope") is None
    assert mem.add(APPLES) == 5
    assert mem.add(APPLES[:2] + [APPLES[0]]) == 2
    assert mem.count() == 5
    assert mem.get(APPLES[3].id) == APPLES[3]
    assert mem.get_many([APPLES[4].id, "missing", APPLES[0].id]) == [APPLES[4], APPLES[0]]
    changed = APPLES[1].model_copy(update={"correct": True, "reward": 0.5})
    mem.add([changed])
    assert mem.count() == 5 and mem.get(changed.id) == changed


def test_add_trajectories_remembers_finished_runs_once(target):
    mem = EpisodicMemory.open(**target)
    runs = [Trajectory(question=f"What is {i} + {i}?", graph="direct", model="fake", final_answer=str(2 * i),
                       solution=f"{i} + {i} = {2 * i}", correct=True, reward=1.0,
                       steps=[AgentStep(role="student", node="student")]) for i in range(3)]
    failed = Trajectory(question="What is 9 + 9?", graph="direct", model="fake", error="backend down")
    assert mem.add_trajectories(runs + [failed]) == 3
    assert mem.add_trajectories(runs) == 3 and mem.count() == 3
    assert mem.get(Episode.from_trajectory(runs[1]).id).trajectory_id == runs[1].id


def test_similar_solved_gives_the_nearest_correct_worked_examples(target):
    mem = EpisodicMemory.open(**target)
    mem.add(APPLES)
    got = mem.similar_solved("Lily has 6 apples and buys 3 more. How many apples does she have?", k=2)
    assert got == [{"question": APPLES[0].question, "solution": "3 + 5 = 8", "answer": "8"},
                   {"question": APPLES[2].question, "solution": "7 - 2 = 5", "answer": "5"}]
    # the very same question is not its own example (evals must not read their answer) ...
    same = mem.similar_solved(APPLES[0].question, k=1)
    assert same and same[0]["question"] != APPLES[0].question
    # ... unless asked for
    assert mem.similar_solved(APPLES[0].question, k=1, include_same=True)[0]["question"] == APPLES[0].question
    assert len(mem.similar_solved("anything", k=10)) == 3  # only the correct ones exist
    assert mem.similar_solved("anything", k=0) == []


def test_similar_solved_falls_back_to_a_filtered_search_when_candidates_run_out(target):
    mem = EpisodicMemory.open(**target)
    wrong = [ep(f"Tom has {i} apples and buys {i} more. How many apples?", f"{i} + {i}", correct=False)
             for i in range(40)]
    far = ep("A ship sails 30 km north and then 40 km east. How far is it from the start?", "50 km")
    mem.add(wrong + [far])
    mem.overfetch_limit = 16  # the wrong ones fill every candidate list
    assert mem.similar_solved("Tom has 2 apples and buys 2 more. How many apples?", k=1) == [
        {"question": far.question, "solution": "50 km", "answer": "1"}]


def test_novelty_is_one_minus_the_mean_similarity_to_the_nearest_solutions(target):
    mem = EpisodicMemory.open(**target)
    assert mem.novelty("3 + 5 = 8") == 1.0  # empty memory
    mem.add(APPLES)
    copy = mem.novelty("3 + 5 = 8", k=1)
    near = mem.novelty("3 + 5 = 8 apples", k=1)
    unrelated = mem.novelty("The Eiffel Tower is in Paris, France.", k=1)
    assert copy < 1e-5 < near < unrelated <= 1.0
    v = mem.model.encode(["3 + 5 = 8 apples"])[0]
    sims = [max(0.0, float(v @ s)) for s in mem.model.encode([a.solution for a in APPLES])]
    top3 = sorted(sims, reverse=True)[:3]
    assert mem.novelty("3 + 5 = 8 apples", k=3) == pytest.approx(1 - np.mean(top3), abs=1e-4)
    assert mem.novelty("3 + 5 = 8 apples", k=50) == pytest.approx(1 - np.mean(sims), abs=1e-4)  # fewer than k stored
    assert mem.novelties(["3 + 5 = 8", "The Eiffel Tower is in Paris, France."], k=1) == pytest.approx([copy, unrelated], abs=1e-5)
    with pytest.raises(InputError, match="empty"):
        mem.novelty("   ")
    with pytest.raises(InputError, match="k >= 1"):
        mem.novelty("x", k=0)


def test_near_duplicates_of_stored_or_earlier_questions_are_dropped(target):
    mem = EpisodicMemory.open(**target)
    mem.add(APPLES)
    teacher = [
        "Tom has 3 apples and buys 5 more. How many apples does he have?",    # stored
        "A baker makes 12 loaves a day for 5 days. How many loaves?",        # new
        "A baker makes 12 loaves a day for 5 days. How many loaves?",        # repeats the one above
        "Tom has 3 apples and buys 5 more.  How many apples does he have ?",  # stored, respaced
        "A farmer has 10 cows and sells 4. How many cows are left?",         # new
    ]
    assert mem.drop_near_duplicates(teacher) == [1, 4]
    assert mem.is_near_duplicate(APPLES[3].question) and not mem.is_near_duplicate(teacher[4])
    assert mem.drop_near_duplicates([]) == []
    with pytest.raises(InputError, match="threshold"):
        mem.drop_near_duplicates(teacher, threshold=1.5)
    with pytest.raises(InputError, match="question 1 is empty"):
        mem.drop_near_duplicates(["ok", ""])


def test_forget_before_a_date(target):
    mem = EpisodicMemory.open(**target)
    old = [ep(f"old question {i}", f"old {i}", created_at=datetime(2023, 5, 1, tzinfo=UTC)) for i in range(3)]
    new = [ep(f"new question {i}", f"new {i}", created_at=datetime(2025, 5, 1, tzinfo=UTC)) for i in range(2)]
    mem.add(old + new)
    assert mem.forget(before=datetime(2024, 1, 1)) == 3
    assert mem.count() == 2 and mem.get(old[0].id) is None and mem.get(new[0].id) == new[0]
    assert mem.stats()["solution_vectors"] == 2
    assert mem.forget(before=datetime(2024, 1, 1)) == 0


def test_export_import_roundtrip_and_a_bad_file_writes_nothing(target, tmp_path):
    mem = EpisodicMemory.open(**target)
    mem.add(APPLES)
    out = tmp_path / "memory.jsonl"
    assert mem.export_jsonl(out) == 5
    other = EpisodicMemory.open(path=tmp_path / "other")
    assert other.import_jsonl(out) == 5
    assert sorted(other.iter_episodes(), key=lambda e: e.id) == sorted(APPLES, key=lambda e: e.id)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(out.read_text().splitlines()[0] + "\n" + '{"question": "q", "solution": "s", "graph": "g", "agent": "a", "model": "m", "correct": "maybe"}\n')
    fresh = EpisodicMemory.open(path=tmp_path / "fresh")
    with pytest.raises(InputError, match="line 2 rejected: correct = 'maybe'"):
        fresh.import_jsonl(bad)
    assert fresh.count() == 0
    with pytest.raises(InputError, match="no such file"):
        fresh.import_jsonl(tmp_path / "missing.jsonl")


def test_stats(target):
    mem = EpisodicMemory.open(**target)
    mem.add(APPLES + [ep("q by the optimizer", "s", agent="optimizer", graph="cory")])
    st = mem.stats()
    assert (st["episodes"], st["correct"], st["wrong"], st["unknown"]) == (6, 4, 1, 1)
    assert st["by_graph"] == {"direct": 5, "cory": 1} and st["by_agent"] == {"student": 5, "optimizer": 1}
    assert st["embedding_model"] == "sentence-transformers/all-MiniLM-L6-v2" and st["embedding_dim"] == 384


def test_bad_records_and_bad_vectors_write_nothing(target):
    mem = EpisodicMemory.open(**target)
    with pytest.raises(InputError, match=r"episode 1 rejected: solution = ''"):
        mem.add([APPLES[0], {"question": "q", "solution": "", "graph": "g", "agent": "a", "model": "m"}])
    with pytest.raises(InputError, match="episode 0 rejected: graph: missing"):
        mem.add([{"question": "q", "solution": "s", "agent": "a", "model": "m"}])
    with pytest.raises(InputError, match=r"question_vectors has shape \(1, 3\), expected \(1, 384\)"):
        mem.add([APPLES[0]], question_vectors=[[1.0, 0, 0]], solution_vectors=[[1.0, 0, 0]])
    with pytest.raises(InputError, match="episode 0 rejected: expected an Episode or a dict, got str"):
        mem.add(["just text"])
    with pytest.raises(InputError, match="question must be text, got int"):
        mem.similar_solved(42)
    assert mem.count() == 0


def test_a_different_embedding_model_is_refused_by_name(target, tmp_path):
    EpisodicMemory.open(**target).add(APPLES[:1])
    wider = _variant(tmp_path, "wider", pooling_mode_max_tokens=True)
    with pytest.raises(ConfigError) as err:
        EpisodicMemory.open(**target, embedding_model=wider)
    msg = str(err.value)
    assert "sentence-transformers/all-MiniLM-L6-v2' (384 dimensions)" in msg and f"'{wider}' (768 dimensions)" in msg
    same_width = _variant(tmp_path, "renamed")
    with pytest.raises(ConfigError, match="renamed' \\(384 dimensions\\)"):
        EpisodicMemory.open(**target, embedding_model=same_width)
    assert EpisodicMemory.open(**target).count() == 1


async def test_concurrent_calls_from_async_code_are_safe(target):
    mem = EpisodicMemory.open(**target)
    mem.add(APPLES)
    runs = [Trajectory(question=f"Ben has {i} pens and buys {i} more. How many pens?", graph="direct",
                       model="fake", final_answer=str(2 * i), solution=f"{i} + {i} = {2 * i}", correct=True)
            for i in range(8)]
    results = await asyncio.gather(
        *(mem.aadd_trajectories([r]) for r in runs),
        *(mem.asimilar_solved(r.question, 2) for r in runs),
        *(mem.anovelty(r.solution) for r in runs),
        mem.adrop_near_duplicates([r.question for r in runs]),
    )
    assert results[:8] == [1] * 8
    assert all(len(r) == 2 for r in results[8:16])
    assert all(0.0 <= r <= 1.0 for r in results[16:24])
    assert mem.count() == 13


def test_two_processes_writing_at_once_lose_nothing(target):
    procs = [subprocess.Popen(writer(target, "--tag", tag, "--batches", "6", "--size", "40"), cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for tag in ("A", "B")]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        assert out.split("\n").count("committed 5") == 1
    mem = EpisodicMemory.open(**target)
    assert mem.count() == 2 * 6 * 40
    for tag in ("A", "B"):
        for b in range(6):
            eps = synthetic(tag, b, 40)
            assert len(mem.get_many([e.id for e in eps])) == 40
            vec = synthetic_vectors(tag, b, 40, 384)
            # every vector is in the index: each episode is its own nearest neighbour
            assert [n.episode.id for n in (mem.search_vector(vec[i], 1)[0] for i in (0, 39))] == [eps[0].id, eps[39].id]


def test_an_open_memory_sees_what_another_process_wrote_and_the_other_way_round(target):
    mem = EpisodicMemory.open(**target)
    mem.add(APPLES)
    mem.search_vector(mem.model.encode(["warm"])[0], 1)  # this process now holds an open index
    out = subprocess.run(writer(target, "--tag", "O", "--batches", "2", "--size", "30"), cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert mem.count() == 5 + 60
    vec = synthetic_vectors("O", 1, 30, 384)
    assert mem.search_vector(vec[7], 1)[0].episode.id == synthetic("O", 1, 30)[7].id
    mem.add([ep("One more, written after the other process", "1")])
    reread = subprocess.run(writer(target, "--count"), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert reread.stdout.strip() == str(5 + 60 + 1), reread.stderr


def test_a_writer_killed_mid_write_leaves_every_committed_batch_readable(target):
    size = 600
    p = subprocess.Popen(writer(target, "--tag", "K", "--batches", "40", "--size", str(size)), cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    committed = -1
    for line in p.stdout:
        if line.startswith("committed"):
            committed = int(line.split()[1])
            if committed == 1:
                break
    import time

    time.sleep(0.8)  # into the next batch's write
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    assert p.returncode == -signal.SIGKILL
    mem = EpisodicMemory.open(**target)
    assert mem.count() >= 2 * size
    for b in range(2):
        eps = synthetic("K", b, size)
        assert len(mem.get_many([e.id for e in eps])) == size
        vec = synthetic_vectors("K", b, size, 384)
        assert [mem.search_vector(vec[i], 1)[0].episode.id for i in (0, size - 1)] == [eps[0].id, eps[-1].id]
    mem.add(APPLES)  # and it still takes writes
    assert mem.get(APPLES[0].id) == APPLES[0]


def test_a_restart_sees_every_committed_episode(tmp_path):
    folder = {"path": tmp_path / "memory"}
    out = subprocess.run(writer(folder, "--tag", "R", "--batches", "3", "--size", "30"), cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    reread = subprocess.run(writer(folder, "--count"), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert reread.stdout.strip() == "90", reread.stderr
    server = ChromaServer(tmp_path / "server").start()
    try:
        url = {"url": server.url, "collection": "restart"}
        out = subprocess.run(writer(url, "--tag", "R", "--batches", "3", "--size", "30"), cwd=REPO,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        mem = EpisodicMemory.open(**url)
        server.kill()  # no clean shutdown
        with pytest.raises(BackendError, match="lost the chroma server"):
            mem.count()
        server.start()
        reread = subprocess.run(writer(url, "--count"), cwd=REPO, capture_output=True, text=True, timeout=300)
        assert reread.stdout.strip() == "90", reread.stderr
        assert mem.count() == 90  # the open memory carries on once the server is back
    finally:
        server.stop()


def test_open_follows_settings_and_says_clearly_what_is_wrong(tmp_path, settings):
    mem = EpisodicMemory.open(settings)
    assert mem.location == str(settings.home / "memory")
    with pytest.raises(InputError, match="not both"):
        EpisodicMemory.open(path=tmp_path, url="http://127.0.0.1:1")
    with pytest.raises(BackendError, match="cannot reach the chroma server") as err:
        EpisodicMemory.open(url=f"http://127.0.0.1:{free_port()}")
    assert "chroma run" in err.value.hint
    with pytest.raises(ConfigError, match="not an http"):
        EpisodicMemory.open(url="ftp://somewhere")
    with pytest.raises(InputError, match="collection name 'a b' is not allowed"):
        EpisodicMemory.open(path=tmp_path / "m", collection="a b")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="cannot use"):
        EpisodicMemory.open(path=tmp_path / "file")
