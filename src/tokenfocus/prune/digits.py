"""The digits mini-VLM (PRUNING_TOKENIZERS_MECHANISMS.md §0.4): real "visual tokens" inside the real LM, so the
visual-pruning papers run in their published structure, only tiny.

- Data: scikit-learn's bundled ``load_digits`` (1,797 8x8 images, 10 classes), a stratified 80/20 split (seed 0).
- Visual tokens: 16 patches of 2x2 pixels in raster order, each a 4-vector scaled by 1/16.
- Projector g: Linear(4, d) -> GELU -> Linear(d, d) (the LLaVA-1.5 form; 335,232 parameters for d = 576), optional
  learned 16 x 4 patch-position table added before it.
- Sequence: the chat-rendered user turn "<16 projected embeddings> What digit is this?", then the assistant's
  "The digit is 7." -- spliced in through ``inputs_embeds``; the LM stays frozen, only g trains (LLaVA stage 1),
  loss on the assistant's tokens.

The trained projector ships as package data (``data/digits_projector.pt``) with its held-out accuracy; it is
accepted only at >= 80 % (greedy, the digit token).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .layout import TokenLayout
from .testbeds import Encoded

PATCHES, PATCH = 16, 4
MARKER = "<image>"
QUESTION = f"{MARKER} What digit is this?"
FIXTURE = Path(__file__).parent / "data" / "digits_projector.pt"
ACCEPT = 0.80


def digits_split(seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{"train": (patches (N, 16, 4), labels (N,)), "test": ...}: a stratified 80/20 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32) / 16.0  # (N, 8, 8) in [0, 1]
    patches = images.reshape(-1, 4, 2, 4, 2).permute(0, 1, 3, 2, 4).reshape(-1, PATCHES, PATCH)  # raster 2x2 patches
    labels = torch.tensor(data.target)
    train, test = train_test_split(range(len(labels)), test_size=0.2, random_state=seed, stratify=data.target)
    return {"train": (patches[train], labels[train]), "test": (patches[test], labels[test])}


class Projector(nn.Module):
    def __init__(self, hidden: int, pos_embed: bool = False):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(PATCH, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.pos = nn.Parameter(torch.zeros(PATCHES, PATCH)) if pos_embed else None

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self.net(patches if self.pos is None else patches + self.pos)


@dataclass
class DigitsPrompt:
    """The token ids around the image: the chat-rendered text before the marker and after it (+ the assistant
    header), and the answer prefix; ``answer_ids[d]`` is the token of digit d."""

    before: list[int]
    after: list[int]
    prefix: list[int]
    digit_ids: list[int]

    @classmethod
    def build(cls, tokenizer) -> DigitsPrompt:
        from ..rollout import format_prompts

        text = format_prompts(tokenizer, [QUESTION])[0]
        head, tail = text.split(MARKER)
        ids = lambda s: tokenizer(s, add_special_tokens=False).input_ids
        digits = [ids(str(d)) for d in range(10)]
        if any(len(d) != 1 for d in digits):
            raise ValueError("the digits mini-VLM needs a tokenizer with single-token digits")
        return cls(ids(head), ids(tail), ids("The digit is "), [d[0] for d in digits])

    def length(self) -> int:
        return len(self.before) + PATCHES + len(self.after) + len(self.prefix) + 1

    def layout(self) -> TokenLayout:
        """Template before (system), the 16 image tokens (context), the question and header (query), the answer."""
        return TokenLayout.from_segments([("system", len(self.before)), ("context", PATCHES),
                                          ("query", len(self.after)), ("generated", len(self.prefix) + 1)])


def embed_batch(model, projector: Projector, prompt: DigitsPrompt, patches: torch.Tensor,
                labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs_embeds (B, T, d), input ids with -1 at the image slots (B, T)) of images ``patches`` answered with
    ``labels``."""
    table = model.get_input_embeddings()
    batch = patches.shape[0]
    ids = lambda xs: torch.tensor(xs).expand(batch, -1)
    tail = torch.cat([ids(prompt.after + prompt.prefix), torch.tensor([prompt.digit_ids])[0][labels][:, None]], 1)
    embeds = torch.cat([table(ids(prompt.before)), projector(patches).to(table.weight.dtype), table(tail)], 1)
    full_ids = torch.cat([ids(prompt.before), torch.full((batch, PATCHES), -1), tail], 1)
    return embeds, full_ids


def digit_logits(model, projector, prompt: DigitsPrompt, patches, labels, runner=None, drops=None) -> torch.Tensor:
    """(B, V) next-token logits at the position that predicts the digit."""
    embeds, _ = embed_batch(model, projector, prompt, patches, labels)
    if runner is None:
        return model(inputs_embeds=embeds).logits[:, -2]
    return runner.run(inputs_embeds=embeds, drops=drops, logits=[prompt.length() - 2]).logits[:, 0]


def train_projector(model, tokenizer, epochs: int = 4, lr: float = 1e-3, batch: int = 32, pos_embed: bool = False,
                    seed: int = 0, log=print, limit: int | None = None,
                    checkpoint: Path | None = None) -> tuple[Projector, dict]:
    """Train g with the LM frozen (loss on the assistant tokens: "The digit is" and the digit); returns it and
    its held-out greedy accuracy on the digit token. ``checkpoint``: saved after every epoch (projector, optimizer,
    epochs done) and resumed from when present, so a long training runs in slices."""
    torch.manual_seed(seed)
    split = digits_split()
    prompt = DigitsPrompt.build(tokenizer)
    projector = Projector(model.config.hidden_size, pos_embed)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    optimizer = torch.optim.AdamW(projector.parameters(), lr=lr)
    done = 0
    if checkpoint is not None and Path(checkpoint).is_file():
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
        projector.load_state_dict(saved["state"])
        optimizer.load_state_dict(saved["optimizer"])
        done = int(saved["epochs_done"])
        torch.set_rng_state(saved["rng"])
        log(f"[digits] resumed from {checkpoint} after {done} epoch(s)")
    patches, labels = (x[:limit] for x in split["train"])
    for epoch in range(done, epochs):
        order = torch.randperm(len(labels))
        for first in range(0, len(order), batch):
            chosen = order[first:first + batch]
            loss = assistant_loss(model, projector, prompt, patches[chosen], labels[chosen])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        log(f"[digits] epoch {epoch + 1}/{epochs}: last batch loss {loss.item():.3f}")
        if checkpoint is not None:
            from ..io import atomic_write_bytes

            buffer = io.BytesIO()
            torch.save({"state": projector.state_dict(), "optimizer": optimizer.state_dict(), "epochs_done": epoch + 1,
                        "rng": torch.get_rng_state()}, buffer)
            atomic_write_bytes(Path(checkpoint), buffer.getvalue())
    accuracy = evaluate_projector(model, projector, prompt, *split["test"])
    return projector, {"test_accuracy": accuracy, "epochs": epochs, "lr": lr, "batch": batch, "pos_embed": pos_embed,
                       "seed": seed, "train": len(labels), "test": len(split["test"][1])}


def assistant_start(prompt: DigitsPrompt) -> int:
    """The position of the first assistant token ("The")."""
    return len(prompt.before) + PATCHES + len(prompt.after)


def assistant_loss(model, projector, prompt: DigitsPrompt, patches, labels) -> torch.Tensor:
    """Mean cross-entropy over the assistant's tokens ("The digit is" and the digit): the training loss."""
    embeds, ids = embed_batch(model, projector, prompt, patches, labels)
    start = assistant_start(prompt)
    logits = model(inputs_embeds=embeds).logits[:, start - 1:-1]
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, start:].reshape(-1))


@torch.no_grad()
def evaluate_projector(model, projector, prompt: DigitsPrompt, patches, labels, batch: int = 64) -> float:
    """Greedy accuracy on the digit token (argmax over the whole vocabulary is the gold digit)."""
    hits = 0
    for first in range(0, len(labels), batch):
        logits = digit_logits(model, projector, prompt, patches[first:first + batch], labels[first:first + batch])
        gold = torch.tensor(prompt.digit_ids)[labels[first:first + batch]]
        hits += int((logits.argmax(-1) == gold).sum())
    return hits / len(labels)


def save_projector(projector: Projector, info: dict, path: Path = FIXTURE) -> Path:
    if info.get("test_accuracy", 0.0) < ACCEPT:
        raise ValueError(f"held-out accuracy {info.get('test_accuracy')} is below the {ACCEPT:.0%} acceptance bar; "
                         "train longer or enable pos_embed (PRUNING_TOKENIZERS_MECHANISMS.md §0.4)")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state": projector.state_dict(), "info": info}, path)
    return path


def load_projector(hidden: int, path: Path = FIXTURE) -> tuple[Projector, dict]:
    if not Path(path).is_file():
        raise ValueError(f"no trained digits projector at {path}; train one with "
                         "`python -m tokenfocus.prune.digits` (about half an hour on 2 CPU cores)")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    projector = Projector(hidden, pos_embed="pos" in saved["state"])
    projector.load_state_dict(saved["state"])
    return projector.eval(), saved["info"]


def encode_digit(model, projector, prompt: DigitsPrompt, patches: torch.Tensor, label: int) -> tuple[Encoded, torch.Tensor]:
    """One image as a pruning example: (Encoded with ids -1 at the image slots, its inputs_embeds (1, T, d))."""
    embeds, ids = embed_batch(model, projector, prompt, patches[None], torch.tensor([label]))
    answer = prompt.length() - 1
    return Encoded(ids, prompt.layout(), [answer], [prompt.digit_ids[label]]), embeds


def main() -> None:
    """Train the projector on SmolLM2-135M and save it as the package fixture (refused below 80 %)."""
    import argparse

    from ..models import load_model

    parser = argparse.ArgumentParser(description="Train the digits mini-VLM projector (LM frozen)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--pos-embed", action="store_true")
    parser.add_argument("--out", type=Path, default=FIXTURE)
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="saved after every epoch and resumed from (a training in slices)")
    args = parser.parse_args()
    model, tokenizer = load_model("smollm2-135m-instruct")
    projector, info = train_projector(model, tokenizer, epochs=args.epochs, pos_embed=args.pos_embed,
                                      checkpoint=args.checkpoint)
    print(info)
    print(save_projector(projector, info, args.out))


if __name__ == "__main__":
    main()
