"""A small PPO agent on gymnasium's CartPole-v1, tuned by PBT.

PBT tunes the learning rate, entropy coefficient and discount of PPO. One training step collects
1,024 transitions from 8 CartPole environments (gymnasium's vectorised implementation) and does
4 epochs of clipped PPO updates on them. Selection sees the mean return of each member's recent
training episodes; :func:`evaluate` scores a saved policy greedily on held-out environment seeds.

The environments are part of a member's state: its checkpoint holds their random stream (the
vector environment's ``np_random`` bit-generator state) and the episodes in progress (the
environments' physical states, step counts and pending resets, the last observations and the
running returns). A member rebuilt from its checkpoint (a resume, a copy onto another worker, a
restarted Ray actor) so continues exactly where the saved member was, instead of resetting its
environments with the run's seed (which dropped the episodes in progress and drew the run's
first starting states again). Restarting the episodes from the continued stream would have been
simpler, but then a resumed member would train on other episodes than the uninterrupted one.

Run it:

    hyperpop run examples/cartpole.py --overwrite    # PBT with the live view
    python examples/cartpole.py                      # PBT, then the winner's held-out return
"""

from __future__ import annotations

from collections import deque
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

import hyperpop as hp
from hyperpop.torch import TorchTrainable

NUM_ENVS = 8
ROLLOUT = 128  # vector steps per training step: 8 x 128 = 1,024 transitions
EPOCHS, MINIBATCHES = 4, 4
CLIP, LAMBDA, VF_COEF, MAX_GRAD_NORM = 0.2, 0.95, 0.5, 0.5


class ActorCritic(nn.Module):
    """Separate two-layer tanh MLPs for the policy logits and the state value."""

    def __init__(self, obs: int = 4, actions: int = 2, hidden: int = 64):
        super().__init__()
        self.pi = nn.Sequential(
            nn.Linear(obs, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh()
        )
        self.pi_head = nn.Linear(hidden, actions)
        self.v = nn.Sequential(
            nn.Linear(obs, hidden),
            nn.Tanh(),
            nn.Linear(hidden, hidden),
            nn.Tanh(),
            nn.Linear(hidden, 1),
        )
        nn.init.orthogonal_(self.pi_head.weight, 0.01)
        nn.init.zeros_(self.pi_head.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.pi_head(self.pi(x)), self.v(x).squeeze(-1)


class CartPole(TorchTrainable):
    """One member: a PPO agent with its own environments."""

    def build(self, config: dict[str, Any]) -> None:
        self.model = ActorCritic()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config["lr"], eps=1e-5)
        self.envs = gym.make_vec(
            "CartPole-v1", num_envs=NUM_ENVS, vectorization_mode="vector_entry_point"
        )
        seed = int(torch.initial_seed()) % 2**31
        self.obs, _ = self.envs.reset(seed=seed)
        self.rng = torch.Generator().manual_seed(seed)
        self.resetting = np.zeros(NUM_ENVS, dtype=bool)  # gymnasium resets on the next step
        self.ep_return = np.zeros(NUM_ENVS)
        self.returns: deque[float] = deque(maxlen=20)
        self.env_steps = 0

    def extra_state(self) -> dict[str, Any]:
        # the copied weights carry their own record of recent returns, and their environments
        return {
            "steps": self.steps,
            "returns": list(self.returns),
            "env_steps": self.env_steps,
            "envs": self._env_state(),
        }

    def load_extra_state(self, extra: dict[str, Any]) -> None:
        self.steps = int(extra.get("steps", 0))
        self.returns = deque(extra.get("returns", []), maxlen=20)
        self.env_steps = int(extra.get("env_steps", 0))
        if "envs" in extra:  # older checkpoints: the environments as build() reset them
            self._load_env_state(extra["envs"])

    def _env_state(self) -> dict[str, Any]:
        """The environments as they are: random stream, episodes in progress (plain values)."""
        env = self.envs.unwrapped
        return {
            "rng": env.np_random.bit_generator.state,
            "state": env.state.tolist(),
            "steps": env.steps.tolist(),
            "prev_done": env.prev_done.tolist(),
            "obs": self.obs.tolist(),
            "ep_return": self.ep_return.tolist(),
            "resetting": self.resetting.tolist(),
        }

    def _load_env_state(self, saved: dict[str, Any]) -> None:
        env = self.envs.unwrapped
        env.np_random.bit_generator.state = saved["rng"]
        env.state = np.array(saved["state"], dtype=env.state.dtype)
        env.steps = np.array(saved["steps"], dtype=env.steps.dtype)
        env.prev_done = np.array(saved["prev_done"], dtype=bool)
        self.obs = np.array(saved["obs"], dtype=np.float32)
        self.ep_return = np.array(saved["ep_return"], dtype=np.float64)
        self.resetting = np.array(saved["resetting"], dtype=bool)

    def _rollout(self) -> dict[str, torch.Tensor]:
        T, N = ROLLOUT, NUM_ENVS
        obs = np.zeros((T + 1, N, 4), dtype=np.float32)
        actions = np.zeros((T, N), dtype=np.int64)
        logps, values = np.zeros((T + 1, N), np.float32), np.zeros((T + 1, N), np.float32)
        rewards, terms = np.zeros((T, N), np.float32), np.zeros((T, N), bool)
        dones, valid = np.zeros((T, N), bool), np.zeros((T, N), bool)
        with torch.no_grad():
            for t in range(T):
                obs[t] = self.obs
                logits, value = self.model(torch.from_numpy(obs[t]))
                a = torch.multinomial(F.softmax(logits, -1), 1, generator=self.rng).squeeze(-1)
                actions[t] = a.numpy()
                logps[t] = F.log_softmax(logits, -1).gather(1, a[:, None]).squeeze(-1).numpy()
                values[t] = value.numpy()
                self.obs, r, term, trunc, _ = self.envs.step(actions[t])
                valid[t] = ~self.resetting  # a reset step is not a transition of the policy
                rewards[t], terms[t] = r, term
                dones[t] = term | trunc
                self.ep_return += np.where(valid[t], r, 0.0)
                for i in np.flatnonzero(dones[t] & valid[t]):
                    self.returns.append(float(self.ep_return[i]))
                    self.ep_return[i] = 0.0
                self.resetting = dones[t] & valid[t]
            obs[T] = self.obs
            values[T] = self.model(torch.from_numpy(obs[T]))[1].numpy()
        gamma = self.config["gamma"]
        adv = np.zeros((T, N), np.float32)
        last = np.zeros(N, np.float32)
        for t in reversed(range(T)):
            # values[t + 1] is the value of the obs after step t (the final obs at an episode end)
            delta = rewards[t] + gamma * values[t + 1] * (~terms[t]) - values[t]
            last = delta + gamma * LAMBDA * (~dones[t]) * last
            last = np.where(valid[t], last, 0.0)
            adv[t] = last
        self.env_steps += int(valid.sum())
        keep = valid.reshape(-1)
        flat = {
            "obs": obs[:T].reshape(T * N, 4)[keep],
            "actions": actions.reshape(-1)[keep],
            "logps": logps[:T].reshape(-1)[keep],
            "adv": adv.reshape(-1)[keep],
            "returns": (adv + values[:T]).reshape(-1)[keep],
        }
        return {k: torch.from_numpy(v) for k, v in flat.items()}

    def train(self) -> dict[str, float]:
        batch = self._rollout()
        n = len(batch["actions"])
        size = max(1, n // MINIBATCHES)
        ent_coef = self.config["ent_coef"]
        for _ in range(EPOCHS):
            order = torch.randperm(n, generator=self.rng)
            for i in range(0, n, size):
                idx = order[i : i + size]
                logits, value = self.model(batch["obs"][idx])
                logp_all = F.log_softmax(logits, -1)
                logp = logp_all.gather(1, batch["actions"][idx, None]).squeeze(-1)
                adv = batch["adv"][idx]
                adv = (adv - adv.mean()) / (adv.std() + 1e-8) if len(idx) > 1 else adv
                ratio = torch.exp(logp - batch["logps"][idx])
                pg = -torch.min(ratio * adv, ratio.clamp(1 - CLIP, 1 + CLIP) * adv).mean()
                v_loss = F.mse_loss(value, batch["returns"][idx])
                entropy = -(logp_all.exp() * logp_all).sum(-1).mean()
                loss = pg + VF_COEF * v_loss - ent_coef * entropy
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(self.model.parameters(), MAX_GRAD_NORM)
                self.optimizer.step()
        self.steps += 1
        mean = float(np.mean(self.returns)) if self.returns else 0.0
        return {"return": mean, "env_steps": self.env_steps, "episodes": len(self.returns)}

    def cleanup(self) -> None:
        self.envs.close()


def evaluate(state: dict[str, Any], episodes: int = 16, seed: int = 10_000) -> float:
    """Mean return of the saved policy, acting greedily, on held-out environment seeds."""
    model = ActorCritic()
    model.load_state_dict(state["model"])
    envs = gym.make_vec("CartPole-v1", num_envs=episodes, vectorization_mode="vector_entry_point")
    obs, _ = envs.reset(seed=seed)
    total = np.zeros(episodes)
    running = np.ones(episodes, dtype=bool)
    with torch.no_grad():
        while running.any():
            a = model(torch.from_numpy(obs.astype(np.float32)))[0].argmax(-1).numpy()
            obs, r, term, trunc, _ = envs.step(a)
            total += np.where(running, r, 0.0)
            running &= ~(term | trunc)
    envs.close()
    return float(total.mean())


trainable = CartPole
space = {
    "lr": hp.loguniform(1e-4, 1e-2),
    "ent_coef": hp.loguniform(1e-4, 0.1),
    "gamma": hp.uniform(0.9, 0.999),
}
settings = dict(
    metric="return",
    mode="max",
    population=8,
    workers=2,
    budget=hp.Steps(60),
    ready=5,
    seed=0,
    storage="runs/cartpole.db",
)


if __name__ == "__main__":
    result = hp.run(trainable, space, progress=True, overwrite=True, **settings)
    best = result.best
    print(f"best member {best.id}: training return {best.score:.1f}, config {best.config}")
    print(f"held-out greedy return: {evaluate(result.load_checkpoint()):.1f}")
