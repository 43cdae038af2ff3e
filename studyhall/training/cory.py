"""CORY (Ma et al., "Coevolving with the Other You"): two LoRA adapters on one base model,
a pioneer and an observer, trained together. trl has no CORY trainer; this is a small loop
over peft's multi-adapter model with a GRPO-style update.

Each step, for a batch of questions:

1. The pioneer (adapter ``pioneer``, ``set_adapter``) samples ``num_generations`` answers
   per question from the student prompt.
2. The observer samples one answer per pioneer answer, from the observer prompt that holds
   the pioneer's answer (the same prompts the ``cory`` graph sends).
3. Each answer is rewarded (correctness, plus any other reward functions); both agents get
   the *shared* reward, pioneer's + observer's, so the pioneer is paid for answers the
   observer can build on and the observer for fixing or confirming them.
4. Advantages are group-relative: a pair's shared reward minus the mean over the pairs of
   its question, divided by their standard deviation (GRPO). Pairs with equal rewards teach
   nothing and give zero advantage.
5. Each adapter takes a policy-gradient step on its own completions,
   ``-A * mean token log-prob`` (on-policy, one update per batch, so PPO's ratio is 1 and
   needs no clipping), plus ``beta`` times a KL estimate to the base model if ``beta > 0``.
6. Every ``swap_every`` steps the roles swap: the adapter that played observer plays
   pioneer, so both learn both roles (the paper's role exchange).

Both adapters are saved, as ``OUT/pioneer`` and ``OUT/observer`` (by their role at the
end), each a standalone adapter folder; ``OUT/studyhall-adapter.json`` describes the pair.
Checkpoints (both adapters' weights, optimiser states, step) go to OUT/checkpoints.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from typing import Any

from studyhall.training.adapters import AdapterMetadata
from studyhall.training.datasets import observer_prompt, student_prompt
from studyhall.training.rewards import reward_functions
from studyhall.training.runs import Run, finish, latest_checkpoint, load_base, lora_config

NAMES = ("one", "two")  # peft warns when a name is part of "lora_"
STATE = "state.json"


def roles_at(step: int, swap_every: int) -> tuple[str, str]:
    """(pioneer, observer) adapter names at a step: swapped every ``swap_every`` steps."""
    swaps = step // swap_every
    return (NAMES[0], NAMES[1]) if swaps % 2 == 0 else (NAMES[1], NAMES[0])


class CoryLoop:
    def __init__(self, run: Run) -> None:
        import torch
        from peft import PeftModel, get_peft_model

        self.run = run
        self.cfg = run.config
        torch.manual_seed(self.cfg.seed)
        base, self.tokenizer = load_base(run)
        self.tokenizer.padding_side = "left"
        if run.parent is not None:
            self.model = PeftModel.from_pretrained(base, str(run.parent), adapter_name=NAMES[0], is_trainable=True)
            self.model.load_adapter(str(run.parent), adapter_name=NAMES[1], is_trainable=True)
        else:
            self.model = get_peft_model(base, lora_config(run), adapter_name=NAMES[0])
            self.model.add_adapter(NAMES[1], lora_config(run))
        self.device = next(self.model.parameters()).device
        self.params = {
            name: [p for n, p in self.model.named_parameters() if "lora_" in n and f".{name}." in n] for name in NAMES
        }
        for ps in self.params.values():
            for p in ps:
                p.requires_grad_(True)
        self.total = self._total_steps()
        self.optimizers = {n: torch.optim.AdamW(self.params[n], lr=self.cfg.learning_rate,
                                                weight_decay=self.cfg.weight_decay) for n in NAMES}
        warm = int(self.cfg.warmup_ratio * self.total)

        def schedule(s: int) -> float:  # linear warm-up, then linear decay to 0 (as trl's default)
            if warm and s < warm:
                return (s + 1) / warm
            return max(0.0, (self.total - s) / max(1, self.total - warm))

        self.schedulers = {n: torch.optim.lr_scheduler.LambdaLR(o, schedule) for n, o in self.optimizers.items()}
        funcs, weights = reward_functions(self.cfg.rewards, run.novelty)
        self.reward_funcs = funcs + list(run.extra_rewards)
        self.reward_weights = weights + [1.0] * len(run.extra_rewards)
        self.step = 0
        self.log: list[dict[str, Any]] = []
        self.rows = run.dataset.to_list()

    # ------------------------------------------------------------------ schedule and data
    def _total_steps(self) -> int:
        if self.cfg.max_steps > 0:
            return self.cfg.max_steps
        return max(1, math.ceil(self.cfg.num_epochs * len(self.run.dataset) / self.cfg.batch_size))

    def batch(self, step: int) -> list[dict[str, Any]]:
        """Questions for a step: a seeded shuffle per epoch, so a resumed run sees the same ones."""
        per_epoch = max(1, math.ceil(len(self.rows) / self.cfg.batch_size))
        epoch, index = divmod(step, per_epoch)
        order = list(range(len(self.rows)))
        random.Random(self.cfg.seed + epoch).shuffle(order)
        picked = order[index * self.cfg.batch_size:(index + 1) * self.cfg.batch_size]
        while len(picked) < self.cfg.batch_size:  # the last batch of an epoch wraps around
            picked.append(order[len(picked) % len(order)])
        return [self.rows[i] for i in picked]

    # ------------------------------------------------------------------ model calls
    def _encode(self, messages: list[dict[str, str]]) -> list[int]:
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        room = max(16, self.cfg.max_length - self.cfg.max_completion_length)
        return ids[-room:]

    def generate(self, adapter: str, prompts: list[list[int]]) -> list[list[int]]:
        import torch

        self.model.set_adapter(adapter)
        self.model.eval()
        width = max(len(p) for p in prompts)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(prompts):
            ids[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1
        with torch.no_grad():
            out = self.model.generate(
                input_ids=ids.to(self.device), attention_mask=mask.to(self.device), do_sample=True,
                temperature=self.cfg.temperature, top_p=1.0, top_k=0, max_new_tokens=self.cfg.max_completion_length,
                pad_token_id=pad,
            )
        eos = set(_as_list(self.model.generation_config.eos_token_id) + _as_list(self.tokenizer.eos_token_id))
        completions = []
        for row in out[:, width:].tolist():
            cut = next((i + 1 for i, t in enumerate(row) if t in eos), len(row))
            completions.append(row[:cut])
        return completions

    def logprobs(self, prompts: list[list[int]], completions: list[list[int]], adapter: str | None) -> tuple[Any, Any]:
        """Per-token log-probs of each completion after its prompt: ([N, T], mask [N, T])."""
        import torch

        seqs = [p + c for p, c in zip(prompts, completions, strict=True)]
        width = max(len(s) for s in seqs)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        attn = torch.zeros_like(ids)
        target = torch.zeros_like(ids, dtype=torch.bool)
        for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
            ids[i, : len(p) + len(c)] = torch.tensor(p + c)
            attn[i, : len(p) + len(c)] = 1
            target[i, len(p): len(p) + len(c)] = True
        ids, attn, target = ids.to(self.device), attn.to(self.device), target.to(self.device)
        if adapter is None:
            with self.model.disable_adapter(), torch.no_grad():
                logits = self.model(input_ids=ids, attention_mask=attn).logits
        else:
            logits = self.model(input_ids=ids, attention_mask=attn).logits
        logp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        return logp, target[:, 1:]

    def rewards(self, texts: list[str], answers: list[str]) -> tuple[list[float], dict[str, float]]:
        total = [0.0] * len(texts)
        per_func: dict[str, float] = {}
        completions = [[{"role": "assistant", "content": t}] for t in texts]
        for fn, w in zip(self.reward_funcs, self.reward_weights, strict=True):
            values = fn(prompts=[None] * len(texts), completions=completions, answer=answers)
            values = [0.0 if v is None else float(v) for v in values]
            per_func[getattr(fn, "__name__", "reward")] = sum(values) / len(values)
            total = [t + w * v for t, v in zip(total, values, strict=True)]
        return total, per_func

    def update(self, adapter: str, prompts: list[list[int]], completions: list[list[int]], adv: list[float]) -> float:
        import torch

        if not any(adv):
            return 0.0
        self.model.set_adapter(adapter)
        self.model.train()
        logp, mask = self.logprobs(prompts, completions, adapter)
        mask = mask.float()
        per_seq = (logp * mask).sum(-1) / mask.sum(-1).clamp(min=1)
        advantages = torch.tensor(adv, dtype=per_seq.dtype, device=per_seq.device)
        loss = -(advantages * per_seq).mean()
        if self.cfg.beta > 0:
            ref, _ = self.logprobs(prompts, completions, None)
            delta = ref - logp
            kl = ((torch.exp(delta) - delta - 1) * mask).sum(-1) / mask.sum(-1).clamp(min=1)
            loss = loss + self.cfg.beta * kl.mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params[adapter], self.cfg.max_grad_norm)
        self.optimizers[adapter].step()
        self.optimizers[adapter].zero_grad(set_to_none=True)
        return float(loss.detach())

    # ------------------------------------------------------------------ one step
    def train_step(self, step: int) -> dict[str, Any]:
        started = time.perf_counter()
        pioneer, observer = roles_at(step, self.cfg.swap_every)
        rows = self.batch(step)
        g = self.cfg.num_generations
        p_prompts = [self._encode(student_prompt(r["question"])) for r in rows for _ in range(g)]
        answers = [r["answer"] for r in rows for _ in range(g)]
        p_out = self.generate(pioneer, p_prompts)
        p_texts = [self.tokenizer.decode(c, skip_special_tokens=True) for c in p_out]
        o_messages = [observer_prompt(r["question"], t) for r, t in zip([r for r in rows for _ in range(g)], p_texts, strict=True)]
        o_prompts = [self._encode(m) for m in o_messages]
        o_prompts_text = [m[-1]["content"] for m in o_messages]
        o_out = self.generate(observer, o_prompts)
        o_texts = [self.tokenizer.decode(c, skip_special_tokens=True) for c in o_out]
        r_p, per_p = self.rewards(p_texts, answers)
        r_o, per_o = self.rewards(o_texts, answers)
        shared = [a + b for a, b in zip(r_p, r_o, strict=True)]
        adv = _group_advantages(shared, g if g > 1 else len(shared))
        keep = [i for i in range(len(adv)) if p_out[i] and o_out[i]]  # empty completions carry no gradient
        loss_p = self.update(pioneer, [p_prompts[i] for i in keep], [p_out[i] for i in keep], [adv[i] for i in keep])
        loss_o = self.update(observer, [o_prompts[i] for i in keep], [o_out[i] for i in keep], [adv[i] for i in keep])
        for s in self.schedulers.values():
            s.step()
        entry: dict[str, Any] = {
            "step": step + 1, "pioneer": pioneer, "observer": observer,
            "reward": sum(shared) / len(shared), "reward/pioneer": sum(r_p) / len(r_p),
            "reward/observer": sum(r_o) / len(r_o), "loss/pioneer": loss_p, "loss/observer": loss_o,
            "learning_rate": self.schedulers[pioneer].get_last_lr()[0],
            "step_time": time.perf_counter() - started,
            "example": {"question": rows[0]["question"], "pioneer": p_texts[0],
                        "observer_prompt": o_prompts_text[0], "observer": o_texts[0]},
        }
        entry |= {f"rewards/{k}/pioneer": v for k, v in per_p.items()}
        entry |= {f"rewards/{k}/observer": v for k, v in per_o.items()}
        return entry

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> None:
        import torch
        from peft.utils import get_peft_model_state_dict

        folder = self.run.checkpoints / f"checkpoint-{self.step}"
        folder.mkdir(parents=True, exist_ok=True)
        torch.save({
            "lora": {n: get_peft_model_state_dict(self.model, adapter_name=n) for n in NAMES},
            "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
            "schedulers": {n: s.state_dict() for n, s in self.schedulers.items()},
            "rng": torch.get_rng_state(),
        }, folder / "state.pt")
        (folder / STATE).write_text(json.dumps({"step": self.step, "log": self.log}))  # written last: complete
        done = sorted((p for p in self.run.checkpoints.glob("checkpoint-*") if (p / STATE).exists()),
                      key=lambda p: int(p.name.rsplit("-", 1)[1]))
        for old in done[: -self.cfg.save_total_limit]:
            shutil.rmtree(old, ignore_errors=True)

    def load_checkpoint(self) -> None:
        import torch
        from peft.utils import set_peft_model_state_dict

        folder = self.run.resume_from or latest_checkpoint(self.run.checkpoints, STATE)
        if folder is None:
            return
        state = torch.load(folder / "state.pt", weights_only=False)
        for n in NAMES:
            set_peft_model_state_dict(self.model, state["lora"][n], adapter_name=n)
            self.optimizers[n].load_state_dict(state["optimizers"][n])
            self.schedulers[n].load_state_dict(state["schedulers"][n])
        torch.set_rng_state(state["rng"])
        meta = json.loads((folder / STATE).read_text())
        self.step, self.log = int(meta["step"]), list(meta["log"])

    # ------------------------------------------------------------------ the loop
    def train(self) -> None:
        from contextlib import nullcontext

        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.load_checkpoint()
        bar = (Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=self.run.console)
               if self.run.console is not None else None)
        with bar if bar is not None else nullcontext():
            task = bar.add_task(f"cory {self.run.out.name}", total=self.total, completed=self.step, info="") if bar else None
            while self.step < self.total:
                entry = self.train_step(self.step)
                self.step += 1
                self.log.append(entry)
                if bar is not None:
                    bar.update(task, completed=self.step, info=(
                        f"pioneer={entry['pioneer']} reward {entry['reward']:.2f} "
                        f"(p {entry['reward/pioneer']:.2f}, o {entry['reward/observer']:.2f})"))
                if self.step % self.cfg.save_steps == 0 or self.step == self.total:
                    self.save_checkpoint()

    def metrics(self) -> dict[str, Any]:
        swaps = [e["step"] for prev, e in zip(self.log, self.log[1:], strict=False) if e["pioneer"] != prev["pioneer"]]
        last = self.log[-1] if self.log else {}
        return {
            "steps": self.step, "resumed_from_step": self.run.resumed_step, "swaps_at_steps": swaps,
            "reward": last.get("reward"), "reward/pioneer": last.get("reward/pioneer"),
            "reward/observer": last.get("reward/observer"),
            "mean_reward": sum(e["reward"] for e in self.log) / len(self.log) if self.log else None,
        }


def _as_list(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


def _group_advantages(rewards: list[float], group: int) -> list[float]:
    out = []
    for start in range(0, len(rewards), group):
        chunk = rewards[start:start + group]
        mean = sum(chunk) / len(chunk)
        std = (sum((r - mean) ** 2 for r in chunk) / len(chunk)) ** 0.5
        out += [0.0 if std < 1e-8 else (r - mean) / (std + 1e-4) for r in chunk]
    return out


def fit(run: Run) -> AdapterMetadata:
    loop = CoryLoop(run)
    loop.train()
    pioneer, observer = roles_at(max(0, loop.step - 1), run.config.swap_every)
    return finish(run, loop.model, {"pioneer": pioneer, "observer": observer}, loop.metrics(), loop.log,
                  extra={"identities": {"pioneer": pioneer, "observer": observer}})
