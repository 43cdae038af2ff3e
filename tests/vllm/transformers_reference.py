"""Greedy outputs of the transformers backend, run in the MAIN environment (its transformers
version is the one the backend supports; .venv-vllm pins an older one for vLLM).

    python -m tests.vllm.transformers_reference '{"path": ..., "prompts": [...], "max_tokens": 48}'

Prints a JSON list of completions, one per prompt. An optional "adapter" (a LoRA folder) is
applied by the transformers backend (peft).
"""

from __future__ import annotations

import json
import sys


def main() -> None:
    job = json.loads(sys.argv[1])
    from langchain_core.messages import HumanMessage, SystemMessage

    from studyhall.config import load_settings
    from studyhall.serving.loader import load_chat_model

    model = load_chat_model(f"hf:{job['path']}", load_settings(), dtype="float32", max_tokens=job["max_tokens"],
                            adapter=job.get("adapter"))
    out = []
    for prompt in job["prompts"]:
        msgs = [SystemMessage(job["system"]), HumanMessage(prompt)]
        out.append(model.invoke(msgs, temperature=0.0).content)
    model.engine.close()  # stop the engine thread before the interpreter exits
    print(json.dumps(out))


if __name__ == "__main__":
    main()
