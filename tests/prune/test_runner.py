"""LayerRunner against transformers itself: unpruned it is ``model.forward``; a drop before layer 0 is a fresh
forward on the kept tokens (with their own or renumbered positions); a drop before layer L > 0 equals the real
forward whose layers L.. cannot attend to the dropped tokens (a 4-D mask put into those layers by hooks); a merge
equals that forward with the group's mean put into the kept token by a hook."""

from __future__ import annotations

import pytest
import torch

from tokenfocus.capture import capture
from tokenfocus.models import load_model
from tokenfocus.prune import LayerRunner, Merge

TINY = "tiny-llama:layers=4,hidden=32,heads=4,kv_heads=2"


@pytest.fixture(scope="module", params=["sdpa", "eager"])
def model(request):
    model, _ = load_model(TINY)
    model.set_attn_implementation(request.param)  # eager: what attention-probability signals run under
    return model.eval()


def ids_of(model, batch=2, length=14, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.config.vocab_size, (batch, length), generator=generator)


@torch.no_grad()
def test_unpruned_the_runner_is_model_forward(model):
    ids = ids_of(model)
    out = LayerRunner(model).run(ids)
    assert torch.allclose(out.logits, model(ids).logits, atol=1e-5)
    assert out.kept == list(range(14)) and out.history == {}
    last = LayerRunner(model).run(ids, logits="last").logits
    assert last.shape == (2, 1, model.config.vocab_size) and torch.allclose(last[:, 0], model(ids).logits[:, -1],
                                                                            atol=1e-5)


@torch.no_grad()
def test_a_drop_before_layer_0_is_a_fresh_forward_on_the_kept_tokens(model):
    ids = ids_of(model)
    keep = [0, 2, 3, 7, 8, 13]
    renumbered = LayerRunner(model).run(ids, drops={0: keep}, positions="renumber")
    assert torch.allclose(renumbered.logits, model(ids[:, keep]).logits, atol=1e-5)
    kept = LayerRunner(model).run(ids, drops={0: keep}, positions="keep")
    reference = model(ids[:, keep], position_ids=torch.tensor([keep])).logits
    assert torch.allclose(kept.logits, reference, atol=1e-5)
    assert not torch.allclose(kept.logits, renumbered.logits, atol=1e-3)  # the positions policy matters
    assert kept.kept == keep and kept.position_ids.tolist() == [keep] and renumbered.position_ids.tolist() == [
        list(range(6))]


def masked_forward(model, ids, dropped: list[int], from_layer: int, merge: dict | None = None) -> torch.Tensor:
    """The real forward with layers ``from_layer``.. unable to attend to ``dropped`` (their keys masked); ``merge``
    {p: [q, ...]}: the hidden state entering ``from_layer`` at p becomes the mean over p and the qs."""
    length = ids.shape[1]
    allowed = torch.ones(length, length).tril().bool()
    late = allowed.clone()
    late[:, dropped] = False
    late[dropped, dropped] = True  # a dropped row attends to itself only: its output is never read
    bias = torch.zeros(length, length).masked_fill(~late, torch.finfo(torch.float32).min)[None, None]
    early = torch.zeros(length, length).masked_fill(~allowed, torch.finfo(torch.float32).min)[None, None]
    handles = []
    for index, layer in enumerate(model.model.layers):
        mask = (bias if index >= from_layer else early).expand(ids.shape[0], 1, length, length)

        def hook(module, args, kwargs, mask=mask, index=index):
            if merge and index == from_layer:
                hidden = (args[0] if args else kwargs["hidden_states"]).clone()
                for target, members in merge.items():
                    hidden[:, target] = hidden[:, [target, *members]].mean(dim=1)
                if args:
                    args = (hidden, *args[1:])
                else:
                    kwargs = {**kwargs, "hidden_states": hidden}
            return args, {**kwargs, "attention_mask": mask}

        handles.append(layer.register_forward_pre_hook(hook, with_kwargs=True))
    try:
        return model(ids).logits
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
@pytest.mark.parametrize("layer", [1, 2, 3])
def test_a_mid_forward_drop_equals_masking_the_dropped_keys_from_that_layer_on(model, layer):
    ids = ids_of(model, seed=layer)
    keep = [0, 1, 4, 5, 6, 9, 12, 13]
    dropped = [p for p in range(14) if p not in keep]
    out = LayerRunner(model).run(ids, drops={layer: keep}, positions="keep")
    reference = masked_forward(model, ids, dropped, layer)[:, keep]
    assert torch.allclose(out.logits, reference, atol=1e-5)
    unpruned = model(ids).logits[:, keep]
    assert not torch.allclose(out.logits, unpruned, atol=1e-4)  # the drop did change the kept tokens
    assert masked_forward(model, ids, [], 0).allclose(model(ids).logits, atol=1e-5)  # the reference's own check


@torch.no_grad()
@pytest.mark.parametrize("layer", [0, 2])
def test_a_merge_averages_the_group_into_the_kept_token_then_drops_the_rest(model, layer):
    """Token merging: the kept token p carries the mean of its and its group's hidden states from layer L on, the
    group is dropped; the reference is the real forward with that mean put in by a hook and the keys masked."""
    ids = ids_of(model, seed=10 + layer)
    keep = [0, 1, 4, 5, 9, 12, 13]
    into = {4: [2, 3], 9: [6, 7, 8]}  # 10 and 11 are dropped without merging
    dropped = [p for p in range(14) if p not in keep]
    out = LayerRunner(model).run(ids, drops={layer: Merge(keep, into)}, positions="keep")
    reference = masked_forward(model, ids, dropped, layer, merge=into)[:, keep]
    assert torch.allclose(out.logits, reference, atol=1e-5)
    plain = LayerRunner(model).run(ids, drops={layer: keep}, positions="keep")
    assert not torch.allclose(out.logits, plain.logits, atol=1e-4)  # merging is not dropping
    assert torch.allclose(LayerRunner(model).run(ids, drops={layer: Merge(keep)}).logits, plain.logits, atol=1e-6)
    assert out.kept == keep and out.history[layer] == keep
    for bad, message in ((Merge(keep, {2: [3]}), "merge target 2 is not kept"),
                         (Merge(keep, {4: [2], 9: [2]}), r"positions \[2\] merged into 9 are kept or merged twice"),
                         (Merge(keep, {4: [5]}), r"positions \[5\] merged into 4 are kept")):
        with pytest.raises(ValueError, match=message):
            LayerRunner(model).run(ids, drops={layer: bad})


@torch.no_grad()
def test_progressive_drops_from_callables_and_hooks_see_the_kept_tokens(model):
    ids = ids_of(model, batch=1)
    seen = []

    def half(state):
        seen.append((state.layer, state.hidden.shape[1], list(state.kept)))
        return state.kept[: 1 + len(state.kept) // 2] + state.kept[-1:]

    with capture(model, {"layers.3.resid_post": None, "layers.0.resid_post": None}) as got:
        out = LayerRunner(model).run(ids, drops={1: half, 3: half})
    assert [s[:2] for s in seen] == [(1, 14), (3, 9)]
    assert out.history[1] == list(range(8)) + [13] and out.kept == out.history[3] == [0, 1, 2, 3, 4, 13]
    assert got["layers.0.resid_post"][0].shape[1] == 14 and got["layers.3.resid_post"][0].shape[1] == 6


def test_bad_drops_are_refused_with_the_fix(model):
    ids = ids_of(model, batch=1)
    runner = LayerRunner(model)
    cases = [({4: [0, 1]}, "outside the model's layers 0..3"), ({1: [1, 2]}, "protected position(s) [0]"),
             ({1: [0, 2], 2: [0, 3]}, "positions [3] were already dropped"), ({1: []}, "protected position")]
    for drops, expected in cases:
        with pytest.raises(ValueError, match=expected.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
            runner.run(ids, drops=drops)
    with pytest.raises(ValueError, match="positions must be one of"):
        runner.run(ids, positions="shift")
    with pytest.raises(ValueError, match="exactly one of input_ids and inputs_embeds"):
        runner.run()


@torch.no_grad()
def test_the_same_api_runs_a_llava_family_model():
    """A tiny random LLaVA built from a config: the runner on the language model's input embeddings (image
    features spliced in by LLaVA itself) equals LLaVA's forward, and TransPrune prunes its image tokens."""
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    from tokenfocus.prune import TokenLayout
    from tokenfocus.prune.transprune import TransPrune

    vision = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                              image_size=8, patch_size=4, projection_dim=16)
    text = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                       num_attention_heads=4, num_key_value_heads=2)
    torch.manual_seed(0)
    llava = LlavaForConditionalGeneration(LlavaConfig(vision_config=vision, text_config=text,
                                                      image_token_index=99)).eval()
    ids = torch.tensor([[1, 5, 99, 99, 99, 99, 7, 8, 9]])  # 4 image tokens: (8 / 4)^2 patches
    got = {}
    hook = llava.model.language_model.register_forward_pre_hook(
        lambda module, args, kwargs: got.update(embeds=kwargs["inputs_embeds"]), with_kwargs=True)
    try:
        reference = llava(input_ids=ids, pixel_values=torch.randn(1, 3, 8, 8)).logits
    finally:
        hook.remove()
    runner = LayerRunner(llava)
    assert runner.num_layers == 3  # the language model's layers, not the vision encoder's
    assert torch.allclose(runner.run(inputs_embeds=got["embeds"]).logits, reference, atol=1e-5)
    layout = TokenLayout.from_segments([("system", 2), ("context", 4), ("query", 3)])
    out = TransPrune(llava, layout, accumulate=[0], prune_layers=[1], ratios=[0.5]).run(inputs_embeds=got["embeds"])
    assert len(out.kept) == 7 and out.logits.shape == (1, 1, 100)


def test_a_model_without_the_needed_modules_is_refused_with_what_is_supported():
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=32))
    with pytest.raises(ValueError, match="decoder layers with a `self_attn`.*llama, qwen2/3, mistral"):
        LayerRunner(gpt2)
