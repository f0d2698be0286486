"""The training loop shared by all baselines: stages, checkpoints every epoch, resume, progress.

A method module (``hoannot.baselines.<name>``) provides:

* ``Settings`` -- a pydantic model of its small CPU settings, each field described
  (:class:`hoannot.baselines.settings.CropSettings`: ``epochs``, ``batch_size``, ``lr``,
  ``crop_size``, ``cube_m``, augmentation ranges; plus its own switches), and ``DEFAULTS``,
  that model's dump;
* ``ABLATION: dict`` -- ``{"overrides": {...}, "retrain": bool, "what": str}``: the
  configuration of its paper's ablation partner, and whether that needs its own training
  run (``False``: same weights, different inference, e.g. the feedback loop's initial
  predictor);
* ``build_model(cfg) -> nn.Module``;
* ``stages(cfg) -> list[(stage_name, epochs)]``;
* ``parameters(model, stage)`` -- the parameters optimised in a stage;
* ``init_from_data(model, dataset, cfg)`` -- data-dependent set-up before training
  (PCA basis, priors), stored in the model's buffers;
* ``loss(model, batch, cfg, stage) -> (scalar tensor, {name: float})``;
* ``predict(model, batch, cfg) -> {"joints": (B, 21, 3) normalised crop-relative, and
  optionally "obj_centre" (B, 3), "obj_corners" (B, 8, 3), same units}`` (see
  :mod:`hoannot.baselines.dataset` for "normalised").

A run folder ``RUN/`` holds ``cfg.json`` (method, settings, training sequences),
``ckpt/last.pt`` (model, optimiser, stage, epoch, history, RNG-free: every epoch reseeds
from ``(seed, stage, epoch)``, so resuming reproduces an uninterrupted run exactly) and
``history.json``.
"""

from __future__ import annotations

import importlib
import io
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from hoannot.baselines.dataset import HandCropDataset
from hoannot.io import InputError, atomic_write, write_json

METHODS = ("feedback_loop", "two_stage", "cnn3d", "sdnet")
DATASET_KEYS = ("crop_size", "cube_m", "rot_deg", "trans_m", "scale")


def get_method(name: str) -> ModuleType:
    """The module of a bundled method.

    Raises:
        InputError: unknown method name.
    """
    if name not in METHODS:
        raise InputError(f"unknown baseline {name!r}; choose one of {', '.join(METHODS)}")
    return importlib.import_module(f"hoannot.baselines.{name}")


def make_cfg(method: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The method's settings (its ``Settings`` model, :mod:`hoannot.baselines.settings`) with
    ``overrides`` applied, as a plain dict plus ``seed`` and ``method``.

    Raises:
        InputError: an unknown setting, or a value the setting's type or bounds refuse.
    """
    from pydantic import ValidationError

    mod = get_method(method)
    over = dict(overrides or {})
    seed = over.pop("seed", 0)
    known = mod.Settings.model_fields
    for k in over:
        if k not in known:
            raise InputError(f"{method}: unknown setting {k!r} (known: {', '.join(sorted([*known, 'seed']))})")
    try:
        cfg = mod.Settings(**over).model_dump()
    except ValidationError as e:
        err = e.errors()[0]
        raise InputError(f"{method}: setting {'.'.join(str(x) for x in err['loc'])!r}: {err['msg']} "
                         f"(given {err.get('input')!r})") from None  # fmt: skip
    cfg["seed"] = seed
    cfg["method"] = method
    return cfg


def make_dataset(cfg: dict, seq_dirs, augment: bool) -> HandCropDataset:
    """A :class:`HandCropDataset` with the crop/augmentation settings of ``cfg``.

    Object models (for bounding-box corners) are loaded only when ``cfg["object"]`` is set
    (the feedback loop's hand-object variant).
    """
    kw = {k: cfg[k] for k in DATASET_KEYS if k in cfg}
    return HandCropDataset(seq_dirs, augment=augment, seed=int(cfg.get("seed", 0)),
                           load_object_points=bool(cfg.get("object", False)), **kw)


def _save(path: Path, state: dict) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    with atomic_write(path, "wb") as f:
        f.write(buf.getvalue())


def load_run(run_dir: str | Path, overrides: dict[str, Any] | None = None):
    """Load a trained run.

    Args:
        run_dir: folder written by :func:`train`.
        overrides: inference-time settings to change (e.g. ``{"updates": 0}``).

    Returns:
        (method module, model in eval mode, cfg).

    Raises:
        InputError: missing ``cfg.json`` or checkpoint.
    """
    run = Path(run_dir)
    cfg_path, ckpt = run / "cfg.json", run / "ckpt" / "last.pt"
    if not cfg_path.is_file() or not ckpt.is_file():
        raise InputError(f"{run}: not a training run (needs cfg.json and ckpt/last.pt)")
    import json

    cfg = json.loads(cfg_path.read_text())
    cfg.update(overrides or {})
    mod = get_method(cfg["method"])
    model = mod.build_model(cfg)
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    model.eval()
    return mod, model, cfg


def train(method: str, seq_dirs, out_dir: str | Path, epochs: int | None = None, *, val_dirs=None,
          overrides: dict[str, Any] | None = None, resume: bool = True, progress: bool = True,
          stop_after_epochs: int | None = None, threads: int | None = None) -> dict[str, Any]:
    """Train a baseline on sequence folders; checkpoint every epoch; resume if a checkpoint exists.

    Args:
        method: one of :data:`METHODS`.
        seq_dirs: training sequence folders (labels or ground truth, see ``dataset``).
        out_dir: run folder (created).
        epochs: epochs of the main stage (default: the method's ``DEFAULTS["epochs"]``;
            other stages scale with it, see each method's ``stages``).
        val_dirs: optional validation sequences; their mean loss is logged every epoch.
        overrides: settings to change from the method's ``DEFAULTS``.
        resume: continue from ``out_dir/ckpt/last.pt`` when present (its cfg wins).
        progress: show a rich progress bar and per-epoch lines.
        stop_after_epochs: stop (with a checkpoint) after this many epochs in this call, for
            tests of resume and for time-boxed runs.
        threads: ``torch.set_num_threads`` for this process (None: leave as is). On a shared
            2-core machine 1 thread was 10-20x faster than 2 (OpenMP oversubscription).

    Returns:
        {"run_dir", "train_minutes" (wall time summed over calls), "history": [per-epoch dicts],
        "done": bool}.

    Raises:
        InputError: unknown method/setting, no usable training frames.
    """
    if threads is not None:
        torch.set_num_threads(int(threads))
    out = Path(out_dir)
    ckpt_path = out / "ckpt" / "last.pt"
    state = None
    if resume and ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        cfg = state["cfg"]
    else:
        ov = dict(overrides or {})
        if epochs is not None:
            ov["epochs"] = int(epochs)
        cfg = make_cfg(method, ov)
        cfg["train_sequences"] = [str(Path(s).resolve()) for s in seq_dirs]
    mod = get_method(cfg["method"])
    seed = int(cfg["seed"])
    torch.manual_seed(seed)
    model = mod.build_model(cfg)
    data = make_dataset(cfg, seq_dirs, augment=True)
    val = make_dataset(cfg, val_dirs, augment=False) if val_dirs else None
    plan = mod.stages(cfg)
    stage_i, epoch, history, elapsed = 0, 0, [], 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        stage_i, epoch, history, elapsed = state["stage"], state["epoch"], state["history"], state["elapsed_s"]
    else:
        mod.init_from_data(model, data, cfg)
        write_json(out / "cfg.json", cfg)
    opt, opt_stage = None, None
    done_here = 0
    t0 = time.perf_counter()

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True, quiet=not progress)
    total = sum(e for _, e in plan)
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console, disable=not progress)
    with bar:
        task = bar.add_task(f"{cfg['method']}", total=total, completed=sum(e for _, e in plan[:stage_i]) + epoch, info="")
        while stage_i < len(plan):
            name, n_ep = plan[stage_i]
            if epoch >= n_ep:
                stage_i, epoch, opt = stage_i + 1, 0, None
                continue
            if stop_after_epochs is not None and done_here >= stop_after_epochs:
                break
            if opt is None or opt_stage != stage_i:
                params = [p for p in mod.parameters(model, name) if p.requires_grad]
                opt = torch.optim.Adam(params, lr=float(cfg["lr"]), weight_decay=float(cfg.get("weight_decay", 0.0)))
                opt_stage = stage_i
                if state is not None and state.get("optimizer") is not None and state["stage"] == stage_i:
                    opt.load_state_dict(state["optimizer"])
            torch.manual_seed(hash((seed, stage_i, epoch)) % (2**31))
            data.set_epoch(stage_i * 1000 + epoch)
            gen = torch.Generator().manual_seed(seed * 7919 + stage_i * 1000 + epoch)
            loader = DataLoader(data, batch_size=int(cfg["batch_size"]), shuffle=True, generator=gen, drop_last=len(data) > int(cfg["batch_size"]))
            model.train()
            model.train_epoch = epoch  # methods whose loss depends on the epoch (Eq. 10 growth)
            sums: dict[str, float] = {}
            n = 0
            for batch in loader:
                loss, logs = mod.loss(model, batch, cfg, name)
                opt.zero_grad()
                loss.backward()
                opt.step()
                n += 1
                for k, v in {"loss": float(loss.detach()), **logs}.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
            rec = {"stage": name, "epoch": epoch, **{k: v / max(n, 1) for k, v in sums.items()}}
            if val is not None:
                rec["val_loss"] = evaluate_loss(mod, model, val, cfg, name)
            history.append(rec)
            epoch += 1
            done_here += 1
            now = time.perf_counter()
            stage_next, epoch_next = (stage_i, epoch)
            _save(ckpt_path, {"model": model.state_dict(), "optimizer": opt.state_dict(), "stage": stage_next,
                              "epoch": epoch_next, "history": history, "elapsed_s": elapsed + now - t0, "cfg": cfg})
            state = None
            info = " ".join(f"{k}={v:.4g}" for k, v in rec.items() if isinstance(v, float))
            bar.update(task, advance=1, info=f"{name} {info}")
            if progress:
                console.print(f"{cfg['method']} {name} epoch {epoch}/{n_ep}: {info}")
    elapsed += time.perf_counter() - t0
    done = stage_i >= len(plan)
    if ckpt_path.is_file():
        st = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        st["elapsed_s"] = elapsed
        st["done"] = done
        _save(ckpt_path, st)
    write_json(out / "history.json", {"history": history, "train_minutes": elapsed / 60.0, "done": done})
    return {"run_dir": str(out), "train_minutes": elapsed / 60.0, "history": history, "done": done}


@torch.no_grad()
def evaluate_loss(mod: ModuleType, model, data: HandCropDataset, cfg: dict, stage: str) -> float:
    """Mean loss of ``stage`` over a dataset (eval mode, no augmentation)."""
    model.eval()
    tot, n = 0.0, 0
    for batch in DataLoader(data, batch_size=int(cfg["batch_size"])):
        loss, _ = mod.loss(model, batch, cfg, stage)
        tot += float(loss) * len(batch["depth"])
        n += len(batch["depth"])
    model.train()
    return tot / max(n, 1)


def default_stages(cfg: dict) -> list[tuple[str, int]]:
    """A single stage ``"main"`` of ``cfg["epochs"]`` epochs."""
    return [("main", int(cfg["epochs"]))]


def mean_pose(data: HandCropDataset) -> np.ndarray:
    """(21, 3) mean normalised joint position of a training set (the mean-pose baseline)."""
    return data.all_joints().mean(0)
