"""Generation of one GRPO group, plain (``generate`` on every row's prompt, as TRL calls it) vs shared prefill
(``integrations.shared_prefix.prefilling_shared_prompts``, what ``shared_prefill: true`` wraps around TRL's call),
side by side in one run on the packaged model.

    OMP_NUM_THREADS=1 python benchmarks/shared_prefill_generate.py [--rows 8] [--prompt long_facts:L20] [--width 32]

A group is one real task prompt (with the chat template) repeated ``--rows`` times, sampled at temperature 1 for
``--width`` new tokens (no early stop, so both paths decode the same number of steps) from the same seed. Prints the
seconds per generate call of each path (median of --repeats, alternating), their ratio, whether the sampled tokens
are the same, and the largest difference of the per-step logits.
"""

from __future__ import annotations

import torch

from step_harness import group_arguments, plain_vs_shared, write_report


def build(task_spec: str, rows: int):
    from tokenfocus.models import load_model
    from tokenfocus.tasks import build_task

    model, tokenizer = load_model("default")
    model.eval()
    name, tier = task_spec.split(":")
    example = build_task({"name": name, "tiers": [tier], "seed": 0}).examples("test", 1, seed=0)[0]
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": example.prompt}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)["input_ids"][0]
    ids = prompt.expand(rows, -1).clone()
    return model, tokenizer, ids, torch.ones_like(ids)


def generate(model, tokenizer, ids, mask, width, shared):
    from transformers import GenerationConfig

    from tokenfocus.integrations.shared_prefix import prefilling_shared_prompts

    config = GenerationConfig(max_new_tokens=width, min_new_tokens=width, do_sample=True, temperature=1.0, top_p=1.0,
                              top_k=0, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                              output_logits=True, return_dict_in_generate=True)
    torch.manual_seed(0)
    with torch.no_grad(), prefilling_shared_prompts(model) if shared else torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
    return out.sequences[:, ids.size(1):], torch.stack(out.logits, 1)


def main() -> None:
    args = group_arguments(__doc__.split("\n\n")[0], "benchmarks/results/shared_prefill_generate_cpu.json")
    model, tokenizer, ids, mask = build(args.prompt, args.rows)
    results, median, times = plain_vs_shared(lambda shared: generate(model, tokenizer, ids, mask, args.width, shared),
                                             args.repeats)
    (tokens_a, logits_a), (tokens_b, logits_b) = results[False], results[True]
    write_report({
        "rows": args.rows, "prompt_tokens": ids.size(1), "new_tokens": args.width, "threads": torch.get_num_threads(),
        "plain_s": round(median[False], 3), "shared_prefill_s": round(median[True], 3),
        "speedup": round(median[False] / median[True], 2),
        "times_s": {"plain": [round(t, 3) for t in times[False]], "shared": [round(t, 3) for t in times[True]]},
        "same_tokens": bool(torch.equal(tokens_a, tokens_b)),
        "max_abs_logit_diff": float((logits_a - logits_b).abs().max()),
    }, args.out)

if __name__ == "__main__":
    main()
