"""The stacked engine: every held member's parameters, buffers, optimiser state and
hyperparameters stacked along a leading member dimension, trained at once (``torch.func.vmap``
over ``functional_call``), copied slot to slot (an exploit), and converted to and from the plain
trainable's state (a checkpoint)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch.func import functional_call, stack_module_state, vmap

from hyperpop.trainable import TrainableError
from hyperpop.vectorized.optim import (
    DEFAULTS,
    OPTIMIZER_KEYS,
    OPTIMIZERS,
    group_template,
    step,
)
from hyperpop.vectorized.trainable import (
    INIT_ONLY,
    Members,
    ShapeError,
    VectorizedTrainable,
    split_loss,
    step_seed,
)

__all__ = ["StackedPopulation"]


class StackedPopulation:
    """Every held member's parameters, buffers, optimiser state and hyperparameters, stacked.

    Slot ``i`` of every tensor belongs to one member. The vectorized backend decides which member
    lives in which slot; this class trains slots, copies slots into slots (an exploit), writes
    hyperparameters, and converts a slot to and from the plain trainable's state.
    """

    def __init__(
        self,
        spec: VectorizedTrainable,
        config: dict[str, Any],
        device: str | torch.device,
    ):
        self.spec = spec
        self.device = torch.device(device)
        self.kind = spec.optimizer.lower()
        if self.kind not in OPTIMIZERS:
            raise TrainableError(f"optimizer must be one of {OPTIMIZERS}, got {spec.optimizer!r}")
        spec.config = dict(config)
        spec._device = self.device
        template = spec.build_model(dict(config)).to(self.device)
        self.module = template
        self.param_names = [n for n, _ in template.named_parameters()]
        self.buffer_names = [n for n, _ in template.named_buffers()]
        self.opt_keys = list(DEFAULTS[self.kind])
        self.hp_keys = spec._hp_keys()
        self.state_names = ["momentum_buffer"] if self.kind == "sgd" else ["exp_avg", "exp_avg_sq"]
        # the param_groups entry of a torch.optim state_dict, for checkpoints the plain trainable
        # loads (written out: building a torch optimiser here would import torch._dynamo)
        self.group_template = group_template(self.kind, spec.nesterov)
        self.size = 0
        self.params: dict[str, torch.Tensor] = {}
        self.buffers: dict[str, torch.Tensor] = {}
        self.state: dict[str, dict[str, torch.Tensor]] = {}
        self.opt_steps = torch.zeros(0, dtype=torch.float64, device=self.device)
        self.hp: dict[str, torch.Tensor] = {}
        self.train_steps = torch.zeros(0, dtype=torch.long)
        self.shared = {k: v for k, v in config.items() if k not in self.per_member_keys()}
        self._vloss = vmap(self._member_loss, randomness="different")
        self._veval = vmap(self._member_eval, randomness="different")
        self._vforward = vmap(self._member_forward, randomness="different")

    def per_member_keys(self) -> set[str]:
        """Config keys that may differ between stacked members."""
        return set(OPTIMIZER_KEYS) | set(self.hp_keys) | set(INIT_ONLY)

    def check_configs(self, configs: Sequence[Mapping[str, Any]]) -> None:
        """Refuse configs that differ from the first one in a key that is not per-member.

        Raises:
            ShapeError: naming the keys (e.g. ``batch_size``, a layer width).
        """
        per_member = self.per_member_keys()
        bad: dict[str, set[str]] = {}
        for config in configs:
            keys = (set(config) | set(self.shared)) - per_member
            for key in keys:
                if key not in config or key not in self.shared:
                    bad.setdefault(key, set()).add("missing")
                elif config[key] != self.shared[key]:
                    bad.setdefault(key, {repr(self.shared[key])}).add(repr(config[key]))
        if bad:
            detail = "; ".join(f"{k!r}: {', '.join(sorted(v))}" for k, v in sorted(bad.items()))
            raise ShapeError(
                f"the vectorized backend trains every member as one stacked model, so only "
                f"per-member numbers may differ between members: the optimiser's "
                f"{sorted(k for k, t in OPTIMIZER_KEYS.items() if t in self.opt_keys)} "
                f"and {type(self.spec).__name__}.hyperparameters {sorted(self.hp_keys)}. These "
                f"config keys differ between members: {detail}. Hyperparameters that change "
                "shapes (batch size, layer widths) cannot be stacked: make them constants in the "
                "space, list per-member numbers in `hyperparameters`, or use backend='local'"
            )

    # --- storage ---------------------------------------------------------------------------
    def grow(self, size: int) -> None:
        """Make room for at least ``size`` slots (new slots are zero until written)."""
        if size <= self.size:
            return
        new = size
        extra = new - self.size

        def pad(t: torch.Tensor) -> torch.Tensor:
            z = torch.zeros((extra,) + tuple(t.shape[1:]), dtype=t.dtype, device=t.device)
            return torch.cat([t, z])

        with torch.no_grad():
            if not self.params:
                params, buffers = stack_module_state([self.module])
                self.params = {k: v.detach()[:0].clone() for k, v in params.items()}
                self.buffers = {k: v.detach()[:0].clone() for k, v in buffers.items()}
                self.state = {
                    k: {s: torch.zeros_like(v) for s in self.state_names}
                    for k, v in self.params.items()
                }
                self.hp = {
                    k: torch.zeros(0, dtype=torch.float64, device=self.device)
                    for k in self.opt_keys + self.hp_keys
                }
            self.params = {k: pad(v) for k, v in self.params.items()}
            self.buffers = {k: pad(v) for k, v in self.buffers.items()}
            self.state = {k: {s: pad(v) for s, v in d.items()} for k, d in self.state.items()}
            self.hp = {k: pad(v) for k, v in self.hp.items()}
            self.opt_steps = pad(self.opt_steps)
            self.train_steps = pad(self.train_steps)
        self.size = new

    def fresh(self, slot: int, config: Mapping[str, Any]) -> None:
        """A newly initialised member in ``slot`` (seeded like the plain trainable's setup)."""
        seed = self.spec._init_seed(config)
        if seed is not None:
            torch.manual_seed(seed)
        module = self.spec.build_model(dict(config)).to(self.device)
        with torch.no_grad():
            for name, p in module.named_parameters():
                self.params[name][slot] = p
                for s in self.state_names:
                    self.state[name][s][slot] = 0
            for name, b in module.named_buffers():
                self.buffers[name][slot] = b
            self.opt_steps[slot] = 0
            self.train_steps[slot] = 0

    def set_config(self, slot: int, config: Mapping[str, Any]) -> None:
        """Write a member's hyperparameters into its slot of the hyperparameter tensors."""
        values = self.spec._optimizer_values(config)
        with torch.no_grad():
            for k in self.opt_keys:
                self.hp[k][slot] = values[k]
            for k in self.hp_keys:
                if k not in config:
                    raise TrainableError(f"hyperparameter {k!r} is not in the config {config}")
                self.hp[k][slot] = float(config[k])

    def copy(self, dst: Sequence[int], src: Sequence[int]) -> None:
        """Copy slots ``src`` into slots ``dst`` all at once (reads happen before writes)."""
        if not dst:
            return
        d = torch.tensor(list(dst), device=self.device)
        s = torch.tensor(list(src), device=self.device)
        with torch.no_grad():
            for t in self._all_tensors():
                t[d] = t[s]
            self.train_steps[d.cpu()] = self.train_steps[s.cpu()]

    def _all_tensors(self) -> list[torch.Tensor]:
        out = list(self.params.values()) + list(self.buffers.values())
        out += [v for d in self.state.values() for v in d.values()]
        out.append(self.opt_steps)
        return out

    def save(self, slot: int) -> dict[str, Any]:
        """The plain trainable's state of the member in ``slot`` (copies, not views)."""
        model = {}
        module_sd_names = list(self.module.state_dict().keys())
        stacked = {**self.params, **self.buffers}
        for name in module_sd_names:
            model[name] = stacked[name][slot].detach().clone().cpu()
        group = dict(self.group_template)
        values = {k: float(self.hp[k][slot]) for k in self.opt_keys}
        for k, v in values.items():
            if k in ("beta1", "beta2"):
                continue
            group[k] = v
        if "betas" in group:
            group["betas"] = (values["beta1"], values["beta2"])
        group["params"] = list(range(len(self.param_names)))
        state: dict[int, dict[str, Any]] = {}
        step = float(self.opt_steps[slot])
        # like torch.optim.SGD, no momentum buffers for a member without momentum
        if step > 0 and not (self.kind == "sgd" and values["momentum"] == 0):
            for i, name in enumerate(self.param_names):
                entry = {
                    s: self.state[name][s][slot].detach().clone().cpu() for s in self.state_names
                }
                if self.kind != "sgd":
                    entry = {"step": torch.tensor(step, dtype=torch.float32), **entry}
                state[i] = entry
        return {
            "model": model,
            "optimizer": {"state": state, "param_groups": [group]},
            "extra": {"steps": int(self.train_steps[slot])},
        }

    def load(self, slot: int, state: Mapping[str, Any]) -> None:
        """Write a plain trainable's state (from either backend) into ``slot``."""
        model = state["model"]
        opt = state["optimizer"]
        missing = [n for n in self.param_names + self.buffer_names if n not in model]
        if missing:
            raise TrainableError(f"the checkpoint's model lacks {missing[:5]}")
        with torch.no_grad():
            for name in self.param_names:
                self.params[name][slot] = model[name].to(self.device)
            for name in self.buffer_names:
                self.buffers[name][slot] = model[name].to(self.device)
            steps = 0.0
            for i, name in enumerate(self.param_names):
                entry = opt["state"].get(i, {})
                for s in self.state_names:
                    value = entry.get(s)
                    self.state[name][s][slot] = 0 if value is None else value.to(self.device)
                if "step" in entry:
                    steps = float(entry["step"])
            if self.kind == "sgd" and opt["state"]:
                steps = 1.0  # SGD records no step count; only "has stepped" matters
            self.opt_steps[slot] = steps
            self.train_steps[slot] = int(state.get("extra", {}).get("steps", 0))

    # --- training --------------------------------------------------------------------------
    def _member_loss(self, p: Any, b: Any, batch: Any, hp: Any) -> Any:
        def model(*args: Any, **kwargs: Any) -> Any:
            return functional_call(self.module, (p, b), args, kwargs)

        loss, aux = split_loss(self.spec.loss(model, batch, hp))
        return loss, aux

    def _member_eval(self, p: Any, b: Any, hp: Any) -> Any:
        def model(*args: Any, **kwargs: Any) -> Any:
            return functional_call(self.module, (p, b), args, kwargs)

        return {k: torch.as_tensor(v) for k, v in self.spec.evaluate(model, hp).items()}

    def _member_forward(self, p: Any, b: Any, *inputs: Any) -> Any:
        return functional_call(self.module, (p, b), inputs)

    def train(
        self,
        slots: Sequence[int],
        steps: Sequence[int | None],
        seconds: Sequence[float | None],
        seed: int,
    ) -> list[list[dict[str, float]]]:
        """Train ``slots`` together: slot ``i`` for ``steps[i]`` steps (or ``seconds[i]``).

        ``seed`` (with the step) seeds the data order. Returns each slot's metrics, one dict per
        step trained.
        """
        k = len(slots)
        full = list(slots) == list(range(self.size))
        idx = torch.tensor(list(slots), device=self.device)
        with torch.no_grad():
            if full:
                params = self.params
                buffers = self.buffers
                state = self.state
                opt_steps = self.opt_steps
                hp_all = self.hp
            else:
                params = {n: v[idx] for n, v in self.params.items()}
                buffers = {n: v[idx] for n, v in self.buffers.items()}
                state = {n: {s: v[idx] for s, v in d.items()} for n, d in self.state.items()}
                opt_steps = self.opt_steps[idx]
                hp_all = {n: v[idx] for n, v in self.hp.items()}
        for v in params.values():
            v.requires_grad_(True)
        hp = {n: hp_all[n].to(torch.float32) for n in self.hp_keys}
        opt_hp = {n: hp_all[n] for n in self.opt_keys}
        reports: list[list[dict[str, float]]] = [[] for _ in range(k)]
        start = time.perf_counter()
        limit = [math.inf if s is None else int(s) for s in steps]
        deadline = [math.inf if s is None else float(s) for s in seconds]
        done = [False] * k
        step = 0
        first = int(self.train_steps[int(slots[0])]) if k else 0
        g = torch.Generator()
        try:
            while not all(done):
                active = torch.tensor([not d for d in done], device=self.device)
                mask = None if bool(active.all()) else active
                g.manual_seed(step_seed(self.spec.seed, seed + step))
                metrics = self._one_step(
                    params, buffers, state, opt_steps, hp, opt_hp, g, mask, first + step
                )
                metrics_list = {n: v.tolist() for n, v in metrics.items()}
                step += 1
                elapsed = time.perf_counter() - start
                for i in range(k):
                    if done[i]:
                        continue
                    reports[i].append({n: float(v[i]) for n, v in metrics_list.items()})
                    if len(reports[i]) >= limit[i] or elapsed >= deadline[i]:
                        done[i] = True
        finally:
            for v in params.values():
                v.requires_grad_(False)
        with torch.no_grad():
            counts = torch.tensor([len(r) for r in reports], dtype=torch.long)
            if full:
                self.train_steps[: self.size] += counts
            else:
                for n, v in params.items():
                    self.params[n][idx] = v
                for n, v in buffers.items():
                    self.buffers[n][idx] = v
                for n, d in state.items():
                    for s, v in d.items():
                        self.state[n][s][idx] = v
                self.opt_steps[idx] = opt_steps
                self.train_steps[idx.cpu()] += counts
        return reports

    def _one_step(
        self,
        params: dict[str, torch.Tensor],
        buffers: dict[str, torch.Tensor],
        state: dict[str, dict[str, torch.Tensor]],
        opt_steps: torch.Tensor,
        hp: dict[str, torch.Tensor],
        opt_hp: dict[str, torch.Tensor],
        g: torch.Generator,
        mask: torch.Tensor | None,
        step: int,
    ) -> dict[str, torch.Tensor]:
        k = opt_steps.shape[0]
        names = list(params)
        tensors = [params[n] for n in names]

        def forward(*inputs: torch.Tensor) -> Any:
            return self._vforward(params, buffers, *inputs)

        members = Members(k, hp, g, forward, step)
        sums: dict[str, torch.Tensor] = {}
        count = 0
        self.module.train()
        for batch in self.spec.batches(members):
            loss, aux = self._vloss(params, buffers, batch, hp)
            grads = torch.autograd.grad(loss.sum(), tensors, allow_unused=True)
            with torch.no_grad():
                grads_ = [
                    torch.zeros_like(t) if gr is None else gr for t, gr in zip(tensors, grads)
                ]
                self.step_optimizer(
                    tensors, grads_, [state[n] for n in names], opt_steps, opt_hp, mask
                )
                for name, value in {"loss": loss, **aux}.items():
                    value = value.detach().to(torch.float64)
                    sums[name] = sums[name] + value if name in sums else value
            count += 1
        metrics = {n: v / max(count, 1) for n, v in sums.items()}
        evaluated: dict[str, torch.Tensor] = {}
        if type(self.spec).evaluate is not VectorizedTrainable.evaluate:
            self.module.eval()
            try:
                with torch.no_grad():
                    evaluated = self._evaluate(params, buffers, hp, k)
            finally:
                self.module.train()
        metrics.update({n: v.detach().to(torch.float64).reshape(k) for n, v in evaluated.items()})
        return metrics

    # --- measuring (the backend's automatic chunk size) ------------------------------------
    def measure(
        self,
        slots: Sequence[int],
        size: int,
        batches: int = 3,
        limit: float | None = None,
    ) -> float:
        """Seconds per member and batch of training ``size`` members at once: the median of
        ``batches`` timed batches (drawing the batch, forward, backward and the optimiser step)
        after one untimed, on scratch copies of ``slots`` (repeated to fill ``size``).

        Nothing held changes, and the global random state is restored, so a run trains the
        same whatever was measured before it. ``limit``: stop after the batch that takes the
        measurement past this many seconds (the first batch's time counts if it is the only one).
        """
        times: list[float] = []

        def timed(step: Callable[[], None]) -> bool:
            t = time.perf_counter()
            step()
            times.append(time.perf_counter() - t)
            return limit is None or sum(times) < limit

        self._scratch_steps(slots, size, batches + 1, timed)
        kept = sorted(times[1:] or times)
        return kept[len(kept) // 2] / size

    def activation_bytes(self, slots: Sequence[int], size: int) -> int:
        """Bytes that one batch's forward keeps for the backward pass, per member, measured on
        ``size`` members at once (scratch copies of ``slots``, as :meth:`measure`)."""
        seen: dict[tuple[int, int], int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            try:
                storage = t.untyped_storage()
                seen[(storage.data_ptr(), t.device.index or 0)] = storage.nbytes()
            except (
                RuntimeError,
                NotImplementedError,
            ):  # no plain storage (a tensor subclass)
                pass
            return t

        def hooked(step: Callable[[], None]) -> bool:
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                step()
            return True

        self._scratch_steps(slots, size, 1, hooked)
        return sum(seen.values()) // max(size, 1)

    def _scratch_steps(
        self,
        slots: Sequence[int],
        size: int,
        count: int,
        wrap: Callable[[Callable[[], None]], bool],
    ) -> None:
        """Up to ``count`` training steps of one batch each on scratch copies of ``slots``, each
        run through ``wrap`` (False: stop there); the global random state is put back after."""
        if not slots:
            raise ValueError("measuring needs at least one slot to copy")
        idx = torch.tensor([slots[i % len(slots)] for i in range(size)], device=self.device)
        with torch.no_grad():
            params = {n: v[idx] for n, v in self.params.items()}
            buffers = {n: v[idx] for n, v in self.buffers.items()}
            state = {n: {s: v[idx] for s, v in d.items()} for n, d in self.state.items()}
            opt_steps = self.opt_steps[idx]
            hp = {n: self.hp[n][idx].to(torch.float32) for n in self.hp_keys}
            opt_hp = {n: self.hp[n][idx] for n in self.opt_keys}
        names = list(params)
        tensors = [params[n].requires_grad_(True) for n in names]
        states = [state[n] for n in names]
        cpu_rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None

        def forward(*inputs: torch.Tensor) -> Any:
            return self._vforward(params, buffers, *inputs)

        members = Members(size, hp, torch.Generator().manual_seed(0), forward, 0)
        batches: Iterator[Any] = iter(())
        self.module.train()
        try:
            for _ in range(count):

                def step() -> None:
                    nonlocal batches
                    batch = next(batches, None)
                    if batch is None:  # the step's batches ran out: a new pass
                        batches = iter(self.spec.batches(members))
                        batch = next(batches)
                    loss, _ = self._vloss(params, buffers, batch, hp)
                    grads = torch.autograd.grad(loss.sum(), tensors, allow_unused=True)
                    with torch.no_grad():
                        grads_ = [
                            torch.zeros_like(t) if g is None else g for t, g in zip(tensors, grads)
                        ]
                        self.step_optimizer(tensors, grads_, states, opt_steps, opt_hp)
                    if self.device.type == "cuda":
                        torch.cuda.synchronize(self.device)

                if not wrap(step):
                    break
        finally:
            torch.set_rng_state(cpu_rng)
            if cuda_rng is not None:
                torch.cuda.set_rng_state_all(cuda_rng)

    def _evaluate(
        self,
        params: dict[str, torch.Tensor],
        buffers: dict[str, torch.Tensor],
        hp: dict[str, torch.Tensor],
        k: int,
    ) -> dict[str, torch.Tensor]:
        # a few members per call: evaluation data is often larger than a training batch, and
        # its activations for every member at once would set the process's peak memory
        chunk = max(1, int(self.spec.evaluate_members or k))
        parts: list[dict[str, torch.Tensor]] = []
        for a in range(0, k, chunk):
            b = min(k, a + chunk)
            part = self._veval(
                {n: v[a:b] for n, v in params.items()},
                {n: v[a:b] for n, v in buffers.items()},
                {n: v[a:b] for n, v in hp.items()},
            )
            parts.append({n: v.detach().to(torch.float64).reshape(b - a) for n, v in part.items()})
        return {n: torch.cat([p[n] for p in parts]) for n in parts[0]} if parts else {}

    def step_optimizer(
        self,
        params: list[torch.Tensor],
        grads: list[torch.Tensor],
        states: list[dict[str, torch.Tensor]],
        opt_steps: torch.Tensor,
        hp: dict[str, torch.Tensor],
        mask: torch.Tensor | None = None,
    ) -> None:
        """One optimiser step for every member at once, in place (``torch.optim`` semantics):
        :func:`hyperpop.vectorized.optim.step` with this population's optimiser."""
        step(self.kind, self.spec.nesterov, params, grads, states, opt_steps, hp, mask)
