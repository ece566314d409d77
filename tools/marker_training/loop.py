"""The MLX training loop: a vision warm-up, then the product's prompts and answers, with a curriculum."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple

import numpy as np

from tools.marker_training.inputs import FramePool, ProductInputs
from tools.marker_training.tasks import TASKS, answer_for, eval_sets, random_colours


@dataclass
class TrainConfig:
    steps: int = 500  # joint steps (language-model loss on answers)
    batch_size: int = 32
    lr: float = 2e-3
    warmup: int = 30
    weight_decay: float = 0.01
    pool_size: int = 1024
    refresh_per_step: int = 24
    max_frames: int = 8
    distractors: float = 0.25
    grad_clip: float = 1.0
    # Curriculum: the first `short_steps` joint steps use at most `short_frames` frames.
    short_steps: int = 0
    short_frames: int = 2
    # Vision warm-up: `vision_steps` steps on `vision_batch` frames that train the
    # vision tower + connector with a throw-away linear head (max over each
    # frame's image tokens -> none/white/red/blue), so the image tokens already
    # say "square of colour c here" when the language model starts looking.
    vision_steps: int = 0
    vision_batch: int = 128
    vision_lr: float = 2e-3
    aux_weight: float = 0.0  # the same auxiliary loss during joint steps
    # "default": re-initialise every weight with mlx's own layer initialisers
    # (larger than the builder's N(0, 0.02)); "builder": keep the builder's.
    init: str = "builder"

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def _make_batch(inputs: ProductInputs, pool: FramePool, rng: np.random.Generator, cfg: TrainConfig, max_frames: int):
    rows, weights, pixels, labels = [], [], [], []
    for b in range(cfg.batch_size):
        task = TASKS[b % 2]
        k = int(rng.integers(1, max_frames + 1))
        colours = random_colours(rng, task, k, distractors=cfg.distractors)
        prompt = inputs.prompt_ids[task, k]
        answer = inputs.answer_ids[answer_for(task, colours)]
        ids = prompt + answer
        rows.append(ids)
        w = np.zeros(len(ids), np.float32)
        w[len(prompt) - 1: len(ids) - 1] = 1.0  # positions whose next token is answer or eos
        weights.append(w)
        pixels.extend(pool.pick(c) for c in colours)
        labels.extend(colours)
    length = max(len(r) for r in rows)
    ids = np.full((len(rows), length), inputs.pad_id, np.int32)
    tgt = np.full((len(rows), length), inputs.pad_id, np.int32)
    wts = np.zeros((len(rows), length), np.float32)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        tgt[i, : len(r) - 1] = r[1:]
        wts[i, : len(r)] = weights[i]
    return ids, tgt, wts, np.stack(pixels)[None], np.asarray(labels, np.int32)


def teacher_forced_accuracy(model, inputs: ProductInputs, sets: Sequence[Tuple[list, str]], task: str,
                            batch_size: int = 32) -> float:
    """Share of sets whose greedy answer would be exactly the expected answer (one forward pass)."""
    import mlx.core as mx

    correct = 0
    for start in range(0, len(sets), batch_size):
        chunk = sets[start: start + batch_size]
        rows, pix, spans = [], [], []
        for frames, answer in chunk:
            prompt = inputs.prompt_ids[task, len(frames)]
            ans = inputs.answer_ids[answer]
            rows.append(prompt + ans)
            spans.append((len(prompt) - 1, ans))
            pix.append(inputs.pixels(frames))
        length = max(len(r) for r in rows)
        ids = np.full((len(rows), length), inputs.pad_id, np.int32)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = r
        logits = model(mx.array(ids), mx.array(np.concatenate(pix)[None])).logits
        pred = np.asarray(mx.argmax(logits, axis=-1))
        for i, (s, ans) in enumerate(spans):
            correct += int(pred[i, s: s + len(ans)].tolist() == ans)
    return correct / max(1, len(sets))


def _default_init(model, seed: int) -> None:
    """Give `model` the weights a fresh mlx module of the same class would get."""
    import mlx.core as mx

    mx.random.seed(seed)
    fresh = type(model)(model.config)
    mx.eval(fresh.parameters())
    model.update(fresh.parameters())


def _image_tokens(model, pixels):
    """Image tokens as get_input_embeddings makes them (all patches valid)."""
    pooler, *_ = model.vision_model(pixels.transpose(0, 2, 3, 1), output_hidden_states=True)
    return model.connector(pooler)


def train(model, processor, image_size: int, seed: int, cfg: TrainConfig,
          log: Optional[Callable[[str], None]] = None, eval_every: int = 0, eval_count: int = 64) -> dict:
    """Train `model` in place; returns a small report."""
    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim
    from mlx.utils import tree_flatten

    log = log or (lambda message: None)
    started = time.perf_counter()
    rng = np.random.default_rng([seed, 8, 1])
    mx.random.seed(seed)
    if cfg.init == "default":
        _default_init(model, seed)
    inputs = ProductInputs(model, processor, image_size, cfg.max_frames, rng)
    pool = FramePool(inputs, rng, cfg.pool_size)
    log(f"inputs checked and pool of {cfg.pool_size} frames ready in {time.perf_counter() - started:.1f} s")

    class Trainable(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            self.aux = nn.Linear(model.config.text_config.hidden_size, 4)

    net = Trainable()

    def aux_loss(net, pixels, labels):
        logits = net.aux(_image_tokens(net.model, pixels)).max(axis=1)
        return nn.losses.cross_entropy(logits, labels, reduction="mean")

    def lm_loss(net, ids, positions, targets, pixels, labels):
        logits = net.model(ids, pixels).logits
        # only the positions that predict an answer token or the end token
        picked = logits.reshape(-1, logits.shape[-1])[positions]
        loss = nn.losses.cross_entropy(picked, targets, reduction="mean")
        if cfg.aux_weight:
            loss = loss + cfg.aux_weight * aux_loss(net, pixels[0], labels)
        return loss

    def schedule(lr, steps):
        warm = min(cfg.warmup, max(1, steps // 4))
        return optim.join_schedules(
            [optim.linear_schedule(lr * 0.05, lr, warm), optim.cosine_decay(lr, max(1, steps - warm), lr * 0.02)],
            [warm],
        )

    eval_sets_ = {}
    if eval_every:
        eval_rng = np.random.default_rng([seed, 8, 2])
        eval_sets_ = {(t, n): eval_sets(eval_rng, image_size, eval_count, t, n) for t in TASKS for n in (1, 8)}

    def report(step, losses):
        line = f"step {step} loss {np.mean(losses[-50:]):.4f} ({time.perf_counter() - started:.0f} s)"
        if eval_every and step % eval_every == 0:
            model.eval()
            line += " " + " ".join(
                f"{t[0]}{n}={teacher_forced_accuracy(model, inputs, s_, t):.2f}" for (t, n), s_ in eval_sets_.items()
            )
            model.train()
        log(line)

    model.train()
    # -- phase 1: vision warm-up
    if cfg.vision_steps:
        optimizer = optim.AdamW(learning_rate=schedule(cfg.vision_lr, cfg.vision_steps), weight_decay=cfg.weight_decay)
        value_and_grad = nn.value_and_grad(net, aux_loss)
        losses = []
        per = cfg.vision_batch // 4
        for step in range(cfg.vision_steps):
            labels = np.repeat(np.arange(4), per)
            pixels = np.stack([pool.pick(int(c)) for c in labels])
            loss, grads = value_and_grad(net, mx.array(pixels), mx.array(labels))
            grads, _ = optim.clip_grad_norm(grads, cfg.grad_clip)
            optimizer.update(net, grads)
            mx.async_eval(net.parameters(), optimizer.state, loss)
            pool.refresh(cfg.refresh_per_step)
            losses.append(float(loss))
            if (step + 1) % 50 == 0 or step + 1 == cfg.vision_steps:
                log(f"vision step {step + 1}/{cfg.vision_steps} aux loss {np.mean(losses[-50:]):.4f} "
                    f"({time.perf_counter() - started:.0f} s)")

    # -- phase 2: the product's prompts, answers and end token
    optimizer = optim.AdamW(learning_rate=schedule(cfg.lr, cfg.steps), weight_decay=cfg.weight_decay)
    value_and_grad = nn.value_and_grad(net, lm_loss)
    losses = []
    for step in range(cfg.steps):
        frames = cfg.short_frames if step < cfg.short_steps else cfg.max_frames
        ids, tgt, wts, pixels, labels = _make_batch(inputs, pool, rng, cfg, frames)
        positions = np.flatnonzero(wts.reshape(-1) > 0)
        loss, grads = value_and_grad(net, mx.array(ids), mx.array(positions.astype(np.int32)),
                                     mx.array(tgt.reshape(-1)[positions]), mx.array(pixels), mx.array(labels))
        if cfg.grad_clip:
            grads, _ = optim.clip_grad_norm(grads, cfg.grad_clip)
        optimizer.update(net, grads)
        mx.async_eval(net.parameters(), optimizer.state, loss)
        pool.refresh(cfg.refresh_per_step)  # numpy work while mlx computes
        losses.append(float(loss))
        if (step + 1) % 50 == 0 or step == 0:
            report(step + 1, losses)
    model.eval()
    n_params = sum(v.size for _, v in tree_flatten(model.parameters()))
    return {
        "train_seconds": round(time.perf_counter() - started, 1),
        "final_loss": float(np.mean(losses[-20:])) if losses else None,
        "parameter_count": int(n_params),
    }


def train_checkpoint(out_dir, settings: dict, seed: int, log: Optional[Callable[[str], None]] = None) -> dict:
    """Load the freshly written checkpoint in out_dir, train it, overwrite its weights."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_vlm import load

    out = Path(out_dir)
    model, processor = load(str(out))
    model.set_dtype(mx.float32)
    processor.image_processor.do_image_splitting = False
    cfg = TrainConfig.from_dict(settings["train"])
    report = train(model, processor, settings["vision"]["image_size"], seed, cfg, log=log)
    weights = dict(tree_flatten(model.parameters()))
    mx.eval(weights)
    tmp = out / "model.safetensors.tmp.safetensors"
    mx.save_safetensors(str(tmp), weights, metadata={"format": "mlx"})
    tmp.replace(out / "model.safetensors")
    return report
