"""The paper's toy check of SyRe: identical hidden neurons stay identical under weight decay.

A two-layer ReLU student f(x) = W2·relu(W1·x) learns a random two-layer teacher by full-batch
gradient descent, started with all hidden neurons identical (all rows of W1 equal, all entries of
W2 equal). The permutation symmetry between neurons makes that state invariant under gradient
descent, and weight decay makes it attractive: the student stays a one-neuron network (W1 of
rank 1) and its loss plateaus. SyRe decays toward distinct random anchors, which breaks the tie:
the neurons separate and the loss drops (Ziyin, Xu & Chuang, ICLR 2025,
https://arxiv.org/abs/2408.15495).

With a weaker decay (γ = 1e-3 here) the symmetric state is only a saddle, and rounding noise
(~1e-16 in float64) lets plain decay escape it after some hundred steps; γ = 1e-2 keeps it
at rank 1 (neurons equal up to ~1e-9, where rounding keeps them), which is the trap the paper
describes: still rank 1 with loss 0.168 after 12,000 steps, while SyRe reaches 0.001.

Run: python benchmarks/syre_toy.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

# Runs from a checkout without `pip install -e .`.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ssl_syre.syre import SyRe, syre_param_groups  # noqa: E402


def run_toy(
    use_syre: bool,
    steps: int = 1500,
    lr: float = 0.1,
    weight_decay: float = 1e-2,
    sigma0: float = 0.1,
    hidden: int = 16,
    seed: int = 0,
) -> dict[str, float]:
    """Train the symmetric student with plain weight decay or with SyRe (same γ).

    Args:
        use_syre: Decay toward SyRe's anchors instead of toward 0.
        steps: Full-batch gradient descent steps.
        lr: Learning rate of plain SGD (no momentum).
        weight_decay: γ, for both plain decay and SyRe.
        sigma0: SyRe's anchor scale.
        hidden: Student width.
        seed: Seed of data, teacher, student init and anchors.

    Returns:
        {"loss": final training MSE, "rank": numerical rank of W1 (σ_i > 1e-3·σ_max),
        "spread": max |W1[i] − W1[0]| over neurons, 0 when they are identical}.
    """
    generator = torch.Generator().manual_seed(seed)
    # float64 so that rounding cannot break the symmetry in the plain run: only SyRe should.
    dtype = torch.float64
    inputs = torch.randn(256, 10, generator=generator, dtype=dtype)
    teacher_w1 = torch.randn(8, 10, generator=generator, dtype=dtype) / 10**0.5
    teacher_w2 = torch.randn(1, 8, generator=generator, dtype=dtype) / 8**0.5
    targets = torch.relu(inputs @ teacher_w1.T) @ teacher_w2.T

    student = nn.Sequential(
        nn.Linear(10, hidden, bias=False), nn.ReLU(), nn.Linear(hidden, 1, bias=False)
    ).to(dtype)
    with torch.no_grad():
        row = torch.randn(10, generator=generator, dtype=dtype) / 10**0.5
        student[0].weight.copy_(row.expand(hidden, 10))
        student[2].weight.fill_(1.0 / hidden)

    if use_syre:
        syre = SyRe(student, weight_decay=weight_decay, sigma0=sigma0, seed=seed)
        optimizer = torch.optim.SGD(syre_param_groups(student, syre, weight_decay), lr=lr)
        syre.attach(optimizer)
    else:
        optimizer = torch.optim.SGD(student.parameters(), lr=lr, weight_decay=weight_decay)

    for _ in range(steps):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(student(inputs), targets)
        loss.backward()
        optimizer.step()

    with torch.no_grad():
        final = nn.functional.mse_loss(student(inputs), targets).item()
        w1 = student[0].weight
        singular = torch.linalg.svdvals(w1)
        rank = int((singular > 1e-3 * singular[0]).sum())
        spread = (w1 - w1[0]).abs().max().item()
    return {"loss": final, "rank": rank, "spread": spread}


def build_parser() -> argparse.ArgumentParser:
    """The command line: steps, decay strength, anchor scale and seed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--weight-decay", type=float, default=1e-2)
    parser.add_argument("--sigma0", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main() -> None:
    args = build_parser().parse_args()
    # Tensors of a few thousand values: thread hand-offs cost more than the math.
    torch.set_num_threads(1)
    print(f"{'decay':<12} {'final loss':>12} {'rank W1':>8} {'neuron spread':>14}")
    for use_syre in (False, True):
        result = run_toy(
            use_syre,
            steps=args.steps,
            weight_decay=args.weight_decay,
            sigma0=args.sigma0,
            seed=args.seed,
        )
        label = "syre" if use_syre else "plain"
        print(f"{label:<12} {result['loss']:>12.6f} {result['rank']:>8d} {result['spread']:>14.2e}")


if __name__ == "__main__":
    main()
