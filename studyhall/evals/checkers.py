"""Three answer checkers, reported side by side as published GSM8K numbers are.

- ``strict``: only an explicit final-answer marker counts. Accepted: ``#### N`` (the GSM8K
  format; lm-evaluation-harness's gsm8k strict-match regex ``#### (\\-?[0-9\\.\\,]+)``, with
  any spacing after ``####``) and our agents' ``Answer: N`` at the start of a line (case
  insensitive, optional ``**`` bold, ``$``, ``\\(`` and a ``\\boxed{}`` around N). N is a plain number: sign, digits, thousands
  commas, a decimal part, or a fraction ``a/b``. The FIRST marker in the text is taken, as
  lm-eval's ``take_first``; nothing else (no ``\\boxed``, no "the answer is") counts.
- ``flexible``: the last number anywhere in the completion (lm-eval's flexible-extract).
- ``math_verify``: HuggingFace ``math-verify`` parse + verify of the whole completion
  against the gold answer. Its signal-based timeouts fail off the main thread, so they are
  off and ours is enforced instead: the checks run in a worker process that is killed and
  restarted when one takes longer than the deadline (a timed-out check counts as wrong
  and says so in its note).

strict and flexible compare numerically after normalising (commas, ``$``, trailing dot,
``18.00`` = ``18``), a little more lenient than lm-eval's string match.
"""

from __future__ import annotations

import json
import re
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from studyhall.errors import StudyhallError
from studyhall.tools.answers import answers_match, last_number, normalize_number

CHECKERS: tuple[str, ...] = ("strict", "flexible", "math_verify")
CHECKER_VERSION = 2  # bump when strict/flexible extraction rules change

_N = r"-?[0-9][0-9.,]*(?:\s*/\s*[0-9]+)?"
_STRICT = re.compile(
    r"####\s*\$?\s*(" + _N + r")"
    r"|^[ \t]*\**answer\**[ \t]*:[ \t]*\**[ \t]*(?:\\\(|\$)?[ \t]*(?:\\boxed\{)?[ \t]*\$?(" + _N + r")",
    re.IGNORECASE | re.MULTILINE,
)
_WORKER = Path(__file__).with_name("_math_verify_worker.py")


@dataclass
class CheckResult:
    correct: bool
    extracted: str | None
    note: str | None = None


def strict_extract(text: str) -> str | None:
    """The number after the first ``#### `` or line-leading ``Answer:`` marker."""
    for match in _STRICT.finditer(text or ""):
        norm = normalize_number(match.group(1) or match.group(2))
        if norm is not None:
            return norm
    return None


def check_strict(response: str, gold: str) -> CheckResult:
    got = strict_extract(response)
    return CheckResult(answers_match(got, gold), got)


def check_flexible(response: str, gold: str) -> CheckResult:
    got = last_number(response)
    return CheckResult(answers_match(got, gold), got)


def math_verify_version() -> str:
    try:
        return metadata.version("math-verify")
    except metadata.PackageNotFoundError:
        return "missing"


def checker_versions(timeout: float) -> dict[str, str]:
    """What a summary records so numbers can be traced to the exact checking rules."""
    return {
        "strict": f"studyhall-strict/{CHECKER_VERSION} (#### N or Answer: N (boxed allowed), first marker)",
        "flexible": f"studyhall-flexible/{CHECKER_VERSION} (last number)",
        "math_verify": f"math-verify {math_verify_version()} (own timeouts off; {timeout:g}s deadline per check)",
    }


class MathVerifyChecker:
    """math-verify in a worker process with a per-check deadline; thread-safe.

    A runaway sympy simplification cannot be interrupted inside a thread, so the worker is
    killed at the deadline and a fresh one starts for the next check.
    """

    def __init__(self, timeout: float = 10.0, startup_timeout: float = 120.0) -> None:
        self.timeout = timeout
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the worker now (imports take a few seconds); fails clearly if it cannot."""
        with self._lock:
            self._ensure()

    def _ensure(self) -> subprocess.Popen[bytes]:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        proc = subprocess.Popen(
            [sys.executable, "-u", str(_WORKER)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )
        line = self._read(proc, self.startup_timeout)
        if line is None or json.loads(line).get("ready") is not True:
            _kill(proc)
            reason = json.loads(line).get("error") if line else "it did not start"
            raise StudyhallError(
                f"the math-verify checker is unavailable: {reason}",
                hint="pip install 'math-verify>=0.9,<0.10' into this environment",
            )
        self._proc = proc
        return proc

    @staticmethod
    def _read(proc: subprocess.Popen[bytes], timeout: float) -> bytes | None:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        if not ready:
            return None
        line = proc.stdout.readline()
        return line or None

    def check(self, response: str, gold: str) -> CheckResult:
        with self._lock:
            proc = self._ensure()
            assert proc.stdin is not None
            started = time.perf_counter()
            try:
                proc.stdin.write(json.dumps({"pred": response, "gold": gold}).encode() + b"\n")
                proc.stdin.flush()
            except BrokenPipeError:
                self._proc = None
                return CheckResult(False, None, "math-verify worker died")
            line = self._read(proc, self.timeout)
            if line is None:
                died = proc.poll() is not None
                _kill(proc)
                self._proc = None
                if died:
                    return CheckResult(False, None, f"math-verify worker exited ({proc.returncode})")
                took = time.perf_counter() - started
                return CheckResult(False, None, f"math-verify timed out after {took:.1f}s")
        try:
            out = json.loads(line)
            return CheckResult(bool(out["correct"]), out.get("extracted"), out.get("error"))
        except (ValueError, KeyError):
            return CheckResult(False, None, f"math-verify worker said {line[:80]!r}")

    def close(self) -> None:
        with self._lock:
            if self._proc is not None:
                _kill(self._proc)
                self._proc = None


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            stream.close()


class Checkers:
    """All three checkers; ``check`` returns one result per checker name."""

    def __init__(self, math_verify_timeout: float = 10.0) -> None:
        self.math_verify = MathVerifyChecker(math_verify_timeout)

    def __enter__(self) -> Checkers:
        self.math_verify.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.math_verify.close()

    def check(self, response: str, gold: str) -> dict[str, CheckResult]:
        return {
            "strict": check_strict(response, gold),
            "flexible": check_flexible(response, gold),
            "math_verify": self.math_verify.check(response, gold),
        }
