"""Resumable training state, saved after every epoch: safetensors for tensors, JSON for the rest.

``OUT/resume/state.safetensors`` holds the model's weights, the optimizer's moments and the random
generators' states; ``OUT/resume/state.json`` holds the epoch, the best metric, the scheduler and
the optimizer's hyper-parameters, plus the SHA-256 of the tensor file. No pickle anywhere: a state
from elsewhere cannot run code. The JSON is written last, so a crash between the two writes leaves
the previous epoch's pair detectably inconsistent rather than silently mixed.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wsi_her2.errors import InputNotFoundError, ModelError
from wsi_her2.models.card import file_sha256
from wsi_her2.outputs.atomic import ensure_dir, write_json

STATE_DIR = "resume"
STATE_TENSORS = "state.safetensors"
STATE_JSON = "state.json"
STATE_FORMAT = "wsi-her2-training-state"


def state_exists(out_dir: str | Path) -> bool:
    """Whether ``out_dir`` holds a resumable training state."""
    return (Path(out_dir) / STATE_DIR / STATE_JSON).is_file()


def _rng_tensors() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"rng/torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda/{i}"] = state
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # type: ignore[misc]
    tensors["rng/numpy"] = torch.from_numpy(np.asarray(keys, np.int64))
    version, internal, gauss = random.getstate()
    info = {
        "numpy": [kind, int(pos), int(has_gauss), float(cached)],
        "python": [version, list(internal), gauss],
    }
    return tensors, info


def _restore_rng(tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng/torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng/cuda/"))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    kind, pos, has_gauss, cached = info["numpy"]
    np.random.set_state((kind, tensors["rng/numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = info["python"]
    random.setstate((version, tuple(internal), gauss))


def save_state(
    out_dir: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    *,
    epochs_done: int,
    best_metric: float,
    best_epoch: int,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the state after ``epochs_done`` epochs; returns the state folder."""
    from wsi_her2.models.loading import write_safetensors

    folder = ensure_dir(Path(out_dir) / STATE_DIR)
    tensors: dict[str, torch.Tensor] = {
        f"model/{k}": v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()
    }
    optim_state = optimizer.state_dict()
    plain_state: dict[str, dict[str, Any]] = {}
    for pid, entries in optim_state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer/{pid}/{key}"] = value.detach().to("cpu").contiguous()
            else:
                plain_state.setdefault(str(pid), {})[key] = value
    rng, rng_info = _rng_tensors()
    tensors.update(rng)
    write_safetensors(folder / STATE_TENSORS, tensors, {"format": STATE_FORMAT})
    info = {
        "format": STATE_FORMAT,
        "epochs_done": epochs_done,
        "best_metric": best_metric,
        "best_epoch": best_epoch,
        "optimizer_param_groups": optim_state["param_groups"],
        "optimizer_plain_state": plain_state,
        "scheduler": scheduler.state_dict(),
        "rng": rng_info,
        "tensors_sha256": file_sha256(folder / STATE_TENSORS),
        **(extra or {}),
    }
    write_json(folder / STATE_JSON, info)
    return folder


def read_state_info(out_dir: str | Path) -> dict[str, Any]:
    """The JSON half of a saved state (epoch, best metric, ...).

    Raises:
        InputNotFoundError: there is no state in ``out_dir``.
        ModelError: the state is damaged.
    """
    path = Path(out_dir) / STATE_DIR / STATE_JSON
    if not path.is_file():
        raise InputNotFoundError(
            f"no training state to resume in {out_dir}",
            hint="--resume takes the -o folder of an earlier `wsi-her2 train` run",
        )
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"training state {path} is not valid JSON: {exc}") from exc
    if not isinstance(info, dict) or info.get("format") != STATE_FORMAT:
        raise ModelError(f"{path} is not a wsi-her2 training state")
    return info


def _tuples(group: dict[str, Any]) -> dict[str, Any]:
    # JSON turned tuples (Adam's betas) into lists; the optimizer expects them back.
    return {k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in group.items()}


def load_state(
    out_dir: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> dict[str, Any]:
    """Restore model, optimizer, scheduler and random generators; returns the JSON info.

    Raises:
        InputNotFoundError: there is no state.
        ModelError: the state is damaged or belongs to another model.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    info = read_state_info(out_dir)
    tensor_path = Path(out_dir) / STATE_DIR / STATE_TENSORS
    if not tensor_path.is_file() or file_sha256(tensor_path) != info.get("tensors_sha256"):
        raise ModelError(
            f"the training state in {tensor_path.parent} is incomplete (interrupted while saving)",
            hint="the checkpoint of the best epoch is still usable; restart training without --resume",
        )
    try:
        tensors = load_file(str(tensor_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"cannot read training state {tensor_path}: {exc}") from exc
    weights = {k.removeprefix("model/"): v for k, v in tensors.items() if k.startswith("model/")}
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise ModelError(
            f"the saved state does not fit this model ({str(exc).splitlines()[0]})",
            hint="resume with the architecture, classes and head the run started with",
        ) from exc
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer/"):
            _, pid, name = key.split("/", 2)
            state.setdefault(int(pid), {})[name] = value
    for pid, entries in info.get("optimizer_plain_state", {}).items():
        state.setdefault(int(pid), {}).update(entries)
    groups = [_tuples(g) for g in info["optimizer_param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    scheduler.load_state_dict(info["scheduler"])
    _restore_rng(tensors, info["rng"])
    return info
