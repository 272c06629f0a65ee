"""PyTorch CPU reference for `deno task bench`: times the tiny-GPT training step moelab trains.

The model mirrors moelab's DecoderLM options in bench/moelab.ts: 2 pre-norm blocks, dModel 128,
4 heads, rotary positions (rotate-half pairing), RMSNorm, GELU (tanh) MLP of width 512, linear
layers without biases, tied embeddings, vocabulary 256, batch 8 × 128 tokens, AdamW (lr 1e-3,
betas 0.9/0.95, weight decay 0.1) with gradient clipping at 1. Prints one JSON line: {"samples_ms": [...]}.

Run: OMP_NUM_THREADS=1 python3 bench/torch_step.py [warmup] [repetitions]
     OMP_NUM_THREADS=1 python3 bench/torch_step.py --serve   (one step per line on stdin, for
     bench/cpu_pairs.ts)
"""

import json
import math
import sys
import time

import torch
import torch.nn.functional as F

torch.set_num_threads(1)
torch.manual_seed(0)

LAYERS, D, HEADS, T, BATCH, VOCAB = 2, 128, 4, 128, 8, 256
HEAD_DIM = D // HEADS


class RMSNorm(torch.nn.Module):
    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables():
    inv = 1.0 / (10000 ** (torch.arange(0, HEAD_DIM, 2).float() / HEAD_DIM))
    angles = torch.outer(torch.arange(T).float(), inv)
    return angles.cos(), angles.sin()


COS, SIN = rope_tables()


def rope(x):
    half = HEAD_DIM // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * COS - x2 * SIN, x1 * SIN + x2 * COS], dim=-1)


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.norm1, self.norm2 = RMSNorm(D), RMSNorm(D)
        # No biases, like moelab's projections.
        self.q, self.k, self.v, self.o = (torch.nn.Linear(D, D, bias=False) for _ in range(4))
        self.up = torch.nn.Linear(D, 4 * D, bias=False)
        self.down = torch.nn.Linear(4 * D, D, bias=False)
        self.register_buffer("mask", torch.triu(torch.full((T, T), float("-inf")), 1))

    def forward(self, x):
        h = self.norm1(x)
        split = lambda t: t.view(BATCH, T, HEADS, HEAD_DIM).transpose(1, 2)
        q, k, v = rope(split(self.q(h))), rope(split(self.k(h))), split(self.v(h))
        scores = (q / math.sqrt(HEAD_DIM)) @ k.transpose(-1, -2) + self.mask
        context = torch.softmax(scores, dim=-1) @ v
        x = x + self.o(context.transpose(1, 2).reshape(BATCH, T, D))
        return x + self.down(F.gelu(self.up(self.norm2(x)), approximate="tanh"))


class TinyGpt(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, D)
        self.blocks = torch.nn.ModuleList(Block() for _ in range(LAYERS))
        self.norm = RMSNorm(D)

    def forward(self, ids):
        x = self.embed(ids)
        for block in self.blocks:
            x = block(x)
        return self.norm(x) @ self.embed.weight.t()


def make_step():
    """Builds the model and optimizer; returns a function that runs one step and returns its ms."""
    model = TinyGpt()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)

    def step():
        ids = torch.randint(0, VOCAB, (BATCH, T))
        targets = torch.randint(0, VOCAB, (BATCH, T))
        start = time.perf_counter()
        loss = F.cross_entropy(model(ids).view(-1, VOCAB), targets.view(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        loss.item()
        return (time.perf_counter() - start) * 1000

    return step


def serve():
    """Runs one step per line read from stdin and prints its ms, so a caller can interleave."""
    step = make_step()
    print(json.dumps({"ready": True, "torch": torch.__version__}), flush=True)
    for _ in sys.stdin:
        print(json.dumps({"ms": step()}), flush=True)


def main():
    if sys.argv[1:] == ["--serve"]:
        serve()
        return
    warmup = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    repetitions = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    step = make_step()
    samples = [step() for _ in range(warmup + repetitions)][warmup:]
    print(json.dumps({"samples_ms": samples, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
