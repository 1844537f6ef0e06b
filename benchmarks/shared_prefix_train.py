"""Training forward + backward of one GRPO group, plain (TRL's per-token log-prob forward) vs shared prefix
(integrations/shared_prefix.py), side by side in one run on the packaged model.

    OMP_NUM_THREADS=1 python benchmarks/shared_prefix_train.py [--rows 8] [--prompt long_facts:L20] [--width 32]

A group is one prompt (a real task prompt with the chat template) and ``--rows`` completions of ``--width`` sampled
tokens. Prints the seconds per forward+backward of each path (median of --repeats, alternating), their ratio and the
largest log-prob and relative gradient differences on the real model (the tests check the same on tiny models).
Whole GRPO steps, with and without a teacher, and their memory: ``benchmarks/teacher_step.py --task long_facts:L20
--prompts 1 --variants dapo+shared,dgrpo_b+shared``.
"""

from __future__ import annotations

import torch

from step_harness import group_arguments, plain_vs_shared, write_report


def build(task_spec: str, rows: int, width: int, seed: int = 0):
    from trl.trainer.utils import add_fused_lm_head

    from tokenfocus.models import load_model
    from tokenfocus.tasks import build_task

    model, tokenizer = load_model("default")
    add_fused_lm_head(model, temperature=1.0, outputs=("log_probs", "entropy"))
    name, tier = task_spec.split(":")
    example = build_task({"name": name, "tiers": [tier], "seed": 0}).examples("test", 1, seed=seed)[0]
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": example.prompt}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)["input_ids"][0]
    generator = torch.Generator().manual_seed(seed)
    completions = torch.randint(100, 20000, (rows, width), generator=generator)
    ids = torch.cat([prompt.expand(rows, -1), completions], dim=1)
    mask = torch.ones_like(ids)
    mask[1::2, -width // 4:] = 0  # some completions end early
    return model, ids, mask


def step(model, ids, mask, width, shared):
    from tokenfocus.integrations.shared_prefix import shared_prefix_logps

    model.zero_grad(set_to_none=True)
    if shared:
        logps, entropies = shared_prefix_logps(model, ids, mask, width, compute_entropy=True)
    else:
        labels = ids.masked_fill(mask == 0, -100)
        labels[:, :-width] = -100
        out = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
        logps, entropies = out.log_probs[:, -width:], out.entropy[:, -width:]
    m = mask[:, -width:].float()
    ((logps * m).sum() / m.sum()).backward()
    return logps.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def main() -> None:
    args = group_arguments(__doc__.split("\n\n")[0], "benchmarks/results/shared_prefix_train_cpu.json")
    model, ids, mask = build(args.prompt, args.rows, args.width)
    results, median, _ = plain_vs_shared(lambda shared: step(model, ids, mask, args.width, shared), args.repeats)
    (la, ga), (lb, gb) = results[False], results[True]
    valid = mask[:, -args.width:].bool()
    write_report({
        "rows": args.rows, "prompt_tokens": ids.size(1) - args.width, "completion_tokens": args.width,
        "threads": torch.get_num_threads(), "plain_s": round(median[False], 3), "shared_prefix_s": round(median[True], 3),
        "speedup": round(median[False] / median[True], 2),
        "max_abs_logp_diff": float((la - lb)[valid].abs().max()),
        "max_rel_grad_diff": max(float((ga[n] - gb[n]).norm() / ga[n].norm().clamp_min(1e-12)) for n in ga),
    }, args.out)

if __name__ == "__main__":
    main()
