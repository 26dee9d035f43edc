"""Probe trainables of the GPU placement tests (importable by worker processes, which unpickle
them by reference: this module imports nothing but hyperpop, so a worker starts in a fraction of
the time it takes when it imports the test module, pytest and all)."""

from __future__ import annotations

import os

import hyperpop as hp


class EnvProbe(hp.Trainable):
    """Reports the devices its worker process was given; ``crash=True`` kills the process."""

    def setup(self, config):
        self.steps = 0

    def apply(self, config):
        pass

    def train(self):
        if self.config.get("crash"):
            os._exit(3)
        self.steps += 1
        return {
            "pid": os.getpid(),
            "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "order": os.environ.get("CUDA_DEVICE_ORDER"),
        }

    def save(self):
        return {"steps": self.steps}

    def load(self, state):
        self.steps = state["steps"]


class GpuReporter(hp.Trainable):
    """For ``hp.run``: the worker's single device id and pid as numbers."""

    def setup(self, config):
        self.steps = 0

    def apply(self, config):
        pass

    def train(self):
        self.steps += 1
        return {
            "score": float(self.steps),
            "gpu": float(os.environ["CUDA_VISIBLE_DEVICES"]),
            "pid": float(os.getpid()),
        }

    def save(self):
        return self.steps

    def load(self, state):
        self.steps = state


class CudaProbe(hp.Trainable):
    """A small model trained on ``cuda``; reports what its process sees."""

    def setup(self, config):
        import torch

        torch.manual_seed(0)
        self.model = torch.nn.Linear(16, 1).cuda()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=config["lr"])
        self.x = torch.randn(256, 16, device="cuda")
        self.y = self.x.sum(1, keepdim=True)

    def apply(self, config):
        for g in self.opt.param_groups:
            g["lr"] = config["lr"]

    def train(self):
        import torch

        loss = torch.nn.functional.mse_loss(self.model(self.x), self.y)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return {
            "loss": float(loss),
            "count": float(torch.cuda.device_count()),
            "gpu": float(os.environ["CUDA_VISIBLE_DEVICES"].split(",")[0]),
            "pid": float(os.getpid()),
            "on_cuda": float(next(self.model.parameters()).is_cuda),
        }

    def save(self):
        return {k: v.cpu() for k, v in self.model.state_dict().items()}

    def load(self, state):
        self.model.load_state_dict(state)
