"""Many small CartPole policies trained at once: a pure-PyTorch environment batched over members.

Reinforcement learning with small policies is where a stacked population pays most: each member's
work is thousands of tiny forward passes, so one process that steps every member's environments
and policies together does the work of many. The environment here is the classic cart-pole
(the dynamics of Barto, Sutton and Anderson, 1983, as in gymnasium's CartPole-v1) written with
tensors of shape ``[members, envs]``; the policy is a 4-32-2 MLP trained by REINFORCE with
per-member normalised discounted returns and an entropy bonus, with Adam.

PBT tunes, per member, the learning rate (Adam's), the entropy coefficient (a loss coefficient)
and the discount (used when the returns are computed): all three are tensors of the stacked
population. A training step is one rollout of ``HORIZON`` time steps in ``NUM_ENVS`` environments
per member, then one gradient step; its ``return`` is the mean length of the first episode of
each environment (at most ``HORIZON``).

A member's random draws (its environments' starting states and its sampled actions) come from
its own generator (``members.rand``), which hyperpop seeds from the member's id and training
step: a member rolls out the same whichever members train beside it, so an asynchronous run
interrupted and resumed (which trains the members in other groups) decides exactly as the
uninterrupted one.

Run it:

    hyperpop run examples/cartpole_vectorized.py --overwrite   # PBT with the live view
    python examples/cartpole_vectorized.py                     # PBT, then a greedy evaluation
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

import hyperpop as hp

NUM_ENVS = 16
HORIZON = 200
GRAVITY, CART, POLE, HALF_LENGTH, FORCE, TAU = 9.8, 1.0, 0.1, 0.5, 10.0, 0.02
X_LIMIT, THETA_LIMIT = 2.4, 12 * 2 * math.pi / 360


def reset(shape: tuple[int, ...], generator: torch.Generator | None = None) -> torch.Tensor:
    """Fresh states ``[*shape, 4]`` (position, velocity, angle, angular velocity) near zero."""
    return start(torch.rand(*shape, 4, generator=generator))


def start(uniform: torch.Tensor) -> torch.Tensor:
    """Starting states from uniform draws ``[..., 4]`` in [0, 1): each within 0.05 of zero."""
    return (uniform - 0.5) * 0.1


def physics(state: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One Euler step of every environment; returns the new states and which ones fell."""
    x, x_dot, theta, theta_dot = state.unbind(-1)
    force = torch.where(action == 1, FORCE, -FORCE)
    cos, sin = torch.cos(theta), torch.sin(theta)
    total, pole_moment = CART + POLE, POLE * HALF_LENGTH
    temp = (force + pole_moment * theta_dot**2 * sin) / total
    theta_acc = (GRAVITY * sin - cos * temp) / (HALF_LENGTH * (4.0 / 3.0 - POLE * cos**2 / total))
    x_acc = temp - pole_moment * theta_acc * cos / total
    x, theta = x + TAU * x_dot, theta + TAU * theta_dot
    x_dot, theta_dot = x_dot + TAU * x_acc, theta_dot + TAU * theta_acc
    new = torch.stack([x, x_dot, theta, theta_dot], dim=-1)
    fell = (x.abs() > X_LIMIT) | (theta.abs() > THETA_LIMIT)
    return new, fell


class Policy(nn.Module):
    """A 4-32-2 tanh MLP: action logits."""

    def __init__(self, hidden: int = 32):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, hidden), nn.Tanh(), nn.Linear(hidden, 2))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)


class CartPoleVectorized(hp.VectorizedTrainable):
    """One member: a REINFORCE policy; the backend steps every member's environments at once."""

    optimizer = "adam"
    hyperparameters = ("ent_coef", "gamma")

    def build_model(self, config: dict[str, Any]) -> nn.Module:
        return Policy()

    def batches(self, members: Any) -> Iterator[tuple[torch.Tensor, ...]]:
        k = members.size
        # every draw of the rollout at once, row i from member i's own generator: per time
        # step and environment, a restart state (4) and the action's uniform (1)
        draws = members.rand(HORIZON + 1, NUM_ENVS, 5)
        state = start(draws[:, HORIZON, :, :4])
        obs, actions, fells = [], [], []
        first = torch.zeros(k, NUM_ENVS)  # length of each environment's first episode
        length = torch.zeros(k, NUM_ENVS)
        for t in range(HORIZON):
            logits = members.model(state)  # every member's policy on its own environments
            action = (draws[:, t, :, 4] < logits.softmax(-1)[..., 1]).long()
            new, fell = physics(state, action)
            obs.append(state)
            actions.append(action)
            fells.append(fell)
            length += 1
            first = torch.where(fell & (first == 0), length, first)
            length = torch.where(fell, 0.0, length)
            state = torch.where(fell[..., None], start(draws[:, t, :, :4]), new)
        first = torch.where(first == 0, float(HORIZON), first)
        # discounted returns to go, cut at each fall (reward 1 per step survived)
        gamma = members.hp["gamma"].view(k, 1)
        future = torch.zeros(k, NUM_ENVS)
        returns = []
        for fell in reversed(fells):
            future = 1.0 + gamma * future * (~fell).float()
            returns.append(future)
        ret = torch.stack(returns[::-1], dim=1)  # [k, HORIZON, envs]
        mean = ret.mean(dim=(1, 2), keepdim=True)
        std = ret.std(dim=(1, 2), keepdim=True)
        advantage = ((ret - mean) / (std + 1e-6)).reshape(k, -1)
        yield (
            torch.stack(obs, dim=1).reshape(k, -1, 4),
            torch.stack(actions, dim=1).reshape(k, -1),
            advantage,
            first.mean(dim=1),
        )

    def loss(self, model: Any, batch: Any, hparams: Any) -> Any:
        obs, action, advantage, episode = batch
        logp = F.log_softmax(model(obs), dim=-1)
        chosen = logp.gather(-1, action.unsqueeze(-1)).squeeze(-1)
        entropy = -(logp.exp() * logp).sum(-1).mean()
        loss = -(chosen * advantage).mean() - hparams["ent_coef"] * entropy
        return loss, {"return": episode, "entropy": entropy}


def evaluate(state: dict[str, Any], episodes: int = 32, seed: int = 10_000) -> float:
    """Mean episode length of the saved policy acting greedily (at most 500 steps)."""
    policy = Policy()
    policy.load_state_dict(state["model"])
    g = torch.Generator().manual_seed(seed)
    s = reset((episodes,), g)
    alive = torch.ones(episodes, dtype=torch.bool)
    total = torch.zeros(episodes)
    with torch.no_grad():
        for _ in range(500):
            s, fell = physics(s, policy(s).argmax(-1))
            total += alive.float()
            alive &= ~fell
            if not alive.any():
                break
    return float(total.mean())


trainable = CartPoleVectorized
space = {
    "lr": hp.loguniform(1e-3, 5e-2),
    "ent_coef": hp.loguniform(1e-4, 0.05),
    "gamma": hp.uniform(0.9, 0.999),
}
settings = dict(
    metric="return",
    mode="max",
    population=64,
    budget=hp.Steps(40),
    ready=5,
    seed=0,
    backend="vectorized",
    storage="runs/cartpole_vectorized.db",
)


if __name__ == "__main__":
    result = hp.run(trainable, space, progress=True, overwrite=True, **settings)
    best = result.best
    print(f"best member {best.id}: return {best.score:.1f}, config {best.config}")
    print(f"greedy evaluation (500-step episodes): {evaluate(result.load_checkpoint()):.1f}")
