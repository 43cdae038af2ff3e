"""The math-verify worker process (run as a script by checkers.MathVerifyChecker).

Reads one JSON request per line ({"pred", "gold"}) and answers one JSON line
({"correct", "extracted", "error"}). math-verify's own signal timeouts are off; the parent
kills this process when a check passes its deadline. Exits at end of input, so it never
outlives its parent.
"""

import json
import logging
import sys


def main() -> None:
    try:
        from math_verify import parse, verify
    except Exception as exc:  # reported to the parent, which raises a clear error
        print(json.dumps({"ready": False, "error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return
    logging.disable(logging.WARNING)  # its "timeout is disabled" warnings: we enforce our own
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        try:
            gold = parse(req["gold"], parsing_timeout=None)
            pred = parse(req["pred"], parsing_timeout=None)
            correct = bool(gold) and bool(pred) and verify(gold, pred, timeout_seconds=None)
            extracted = str(pred[-1]) if pred else None
            out = {"correct": bool(correct), "extracted": extracted, "error": None}
        except Exception as exc:
            out = {"correct": False, "extracted": None, "error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
