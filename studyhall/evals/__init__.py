"""studyhall.evals: numbers people can trust and compare with published ones.

    studyhall eval --graph direct --model packaged:smollm2-135m-instruct --limit 200 \\
        --concurrency 16 --out runs/direct-smol      # rerun the same line to resume
    studyhall eval compare runs/direct-smol runs/vote-smol   # table + runs/compare.png

Modules: ``datasets`` (GSM8K, any JSONL, deterministic subsets), ``checkers`` (strict,
flexible, math-verify, side by side), ``metrics`` (accuracy, maj@k, pass@k, tokens,
latency, throughput), ``records`` (EvalConfig, EvalRow, EvalSummary), ``harness`` (the
resumable run), ``report`` (compare table and plot), ``cli``.
"""
