"""``hoannot`` command line: parse arguments, call one pipeline function, print a summary.

    hoannot synth OUT/            render a synthetic capture with ground truth
    hoannot init SEQ/             validate (or ingest HO-3D / DexYCB) and write initial poses
    hoannot fit SEQ/              optimise hand and object poses (resumable)
    hoannot export SEQ/           write HO-3D (or DexYCB) style labels and labels.npz
    hoannot eval PRED GT          compare labels with ground truth
    hoannot report SEQ/           HTML page of a fit (or init): meshes over the images, timelines, flags
    hoannot run SEQ/...           init -> fit -> export -> report of many sequences, as Ray tasks (resumable)
    hoannot demo OUT/             synth -> init -> fit -> export -> eval on a small built-in sequence
    hoannot train-seg / train-kp  train the perception models (DeepLabV3+, CPM) on synthetic renders
    hoannot train METHOD SEQ...   train a bundled pose-estimation baseline on exported labels
    hoannot bench RUN/ SEQ...     benchmark a trained baseline (or your estimator) on labels
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperGroup
from rich.console import Console
from rich.markup import escape

from hoannot.io import InputError
from hoannot.fitting.config import FitConfig
from hoannot.annotate.configs import KeypointConfig, KpTrainConfig, SegmentationConfig, SegTrainConfig
from hoannot.synthesis.config import SynthConfig

console = Console()
err_console = Console(stderr=True)


def _os_error_line(e: OSError) -> str:
    """``<path>: <what the system said>`` for an I/O error (disk full, read-only folder...)."""
    what = e.strerror or str(e) or type(e).__name__
    if e.filename is None:
        return f"{type(e).__name__}: {what}"
    where = f"{e.filename} -> {e.filename2}" if e.filename2 is not None else str(e.filename)
    return f"{where}: {what}"


class _Commands(TyperGroup):
    """Every command: an I/O error is one line naming the path (exit 2), Ctrl-C one line (exit
    130), not a traceback. Commands catch their own :class:`InputError` (and ``fit`` its own
    Ctrl-C, to say how to resume)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BrokenPipeError:  # stdout closed (``| head``): nothing left to print to
            raise
        except OSError as e:
            _fail(InputError(_os_error_line(e)))
        except KeyboardInterrupt:
            err_console.print("interrupted", soft_wrap=True)
            raise typer.Exit(code=130) from None


app = typer.Typer(cls=_Commands, add_completion=False, no_args_is_help=True,
                  help="Hand-object 3D annotation from RGB-D captures.")  # fmt: skip

ManoOpt = typer.Option(None, "--mano-model-path", help="MANO_RIGHT.pkl or its folder (default: bundled open hand).")
YcbOpt = typer.Option(None, "--ycb-dir", help="Folder of YCB models, for objects given by id only.")


def _config_option(model: type, field: str, *decls: str):
    """An option that sets a config field: default None (the config's own), help text the
    field's description, so the two cannot drift apart."""
    desc = model.model_fields[field].description
    return typer.Option(None, *decls, help=desc + ".")


def _fail(e: Exception) -> None:
    """Print ``error: <one line naming the file and the problem>`` on stderr; exit code 2."""
    err_console.print(f"[red]error:[/red] {escape(str(e).replace(chr(10), ' '))}", soft_wrap=True)
    raise typer.Exit(code=2)


@app.command()
def synth(
    out: Path = typer.Argument(..., help="Sequence folder to create."),
    object: str = typer.Option("primitive:box:0.055,0.075,0.11", "--object", help="Mesh file, YCB folder or primitive spec."),
    hand: str = typer.Option("open", "--hand", help="'open' (bundled model) or a skinned glTF hand (.glb), e.g. the WebXR hand."),
    cameras: Optional[int] = _config_option(SynthConfig, "cameras"),
    frames: Optional[int] = _config_option(SynthConfig, "frames"),
    width: Optional[int] = _config_option(SynthConfig, "width"),
    height: Optional[int] = _config_option(SynthConfig, "height"),
    focal: Optional[float] = _config_option(SynthConfig, "focal"),
    scene: Optional[str] = _config_option(SynthConfig, "scene"),
    lighting: Optional[bool] = _config_option(SynthConfig, "lighting", "--lighting/--no-lighting"),
    noise: Optional[bool] = _config_option(SynthConfig, "noise", "--noise/--no-noise"),
    seed: Optional[int] = _config_option(SynthConfig, "seed"),
) -> None:
    """Render a synthetic RGB-D capture of a hand grasping an object, with ground truth (SynthConfig)."""
    from pydantic import ValidationError

    from hoannot.annotate.configs import validation_message
    from hoannot.pipeline import synth_sequence

    settings = {k: v for k, v in dict(cameras=cameras, frames=frames, width=width, height=height, focal=focal,
                                      scene=scene, lighting=lighting, noise=noise, seed=seed).items() if v is not None}  # fmt: skip
    try:
        try:
            SynthConfig(**settings)  # a bad option is one line naming it, before anything is rendered
        except ValidationError as e:
            raise InputError(validation_message(e, "synth", settings, options=True)) from None
        seq = synth_sequence(out, object, hand, **settings)
    except InputError as e:
        _fail(e)
    console.print(f"wrote {seq.root}: {len(seq.cameras)} cameras x {len(seq.frames)} frames (ground truth in gt/)")


@app.command()
def init(
    seq: Path = typer.Argument(..., help="Sequence folder (hoannot layout, or HO-3D / DexYCB layout with --out)."),
    poses: Optional[Path] = typer.Option(None, "--poses", help="Initial poses (.npz, world frame)."),
    from_gt: bool = typer.Option(False, "--from-gt", help="Initial poses = ground truth + noise (synthetic captures)."),
    noise_deg: float = typer.Option(10.0, help="With --from-gt: rotation error, degrees."),
    noise_mm: float = typer.Option(15.0, help="With --from-gt: translation error, mm."),
    out: Optional[Path] = typer.Option(None, "--out", help="Ingest an HO-3D or DexYCB sequence into this new folder first."),
    object_mesh: Optional[str] = typer.Option(None, "--object-mesh", help="With HO-3D/DexYCB ingest: the object's mesh."),
    auto: bool = typer.Option(False, "--auto", help="Initialise from the images and depth alone (no ground truth)."),
    geometry: bool = typer.Option(True, "--geometry/--no-geometry",
                                  help="With --auto: hand/object labels decided by the depth (network labels otherwise)."),
    hand_init: str = typer.Option("search", help="With --auto: search (grasp that explains the hand's depth and masks) "
                                                 "or joints (from the 2D joints, HOnnotate Eq. 11/12)."),
    hypotheses: int = typer.Option(1, help="With --auto --hand-init search: fit the search's best K "
                                   "hypotheses briefly and start from the one with the lowest fit energy (1: the "
                                   "search's winner)."),
    search_joints: Optional[list[float]] = typer.Option(
        None, help="With --auto --hand-init search: weight of the 2D joints in the grasp search's energy (0: not "
        "used); repeat for one search per weight, the start with the lowest estimated hand error kept "
        "[default: 0 and 0.3]."),
    perception: str = typer.Option("auto", help="With --auto: auto (existing folders, else the models), model, or gt."),
    seg_weights: Optional[Path] = typer.Option(None, help="Segmentation weights (default: user cache, then bundled)."),
    kp_weights: Optional[Path] = typer.Option(None, help="2D joint (CPM) weights (default: user cache, then bundled)."),
    kp_detector: str = typer.Option("cpm", help="With --auto: 2D joints from cpm, or mediapipe (pip install 'hoannot[mediapipe]')."),
    device: str = typer.Option("cpu", help="cpu or cuda (perception)."),
    mano_model_path: Optional[Path] = ManoOpt,
    ycb_dir: Optional[Path] = YcbOpt,
    seed: int = 0,
) -> None:
    """Validate a sequence and write its initial poses (init/poses.npz)."""
    from hoannot.datasets.dexycb import ingest_dexycb
    from hoannot.datasets.ho3d import detect_layout, ingest_ho3d
    from hoannot.pipeline import run_init

    try:
        layout = detect_layout(seq)
        if layout != "hoannot" and out is None:
            raise InputError(f"{seq}: {'HO-3D' if layout == 'ho3d' else 'DexYCB'} layout: pass --out NEW_FOLDER to ingest it")
        if layout == "ho3d":
            ingest_ho3d(seq, out, object_mesh)
            console.print(f"ingested HO-3D sequence into {out}")
            seq = out
        elif layout == "dexycb":
            _, note = ingest_dexycb(seq, out, object_mesh, mano_model_path)
            console.print(note, soft_wrap=True)
            seq = out
        _, summary = run_init(seq, poses, from_gt, noise_deg, noise_mm, mano_model_path=mano_model_path,
                              ycb_dir=ycb_dir, seed=seed, auto=auto, perception=perception,
                              seg_weights=seg_weights, kp_weights=kp_weights, device=device,
                              kp_detector=kp_detector, progress=True, geometry=geometry,
                              hand_init=hand_init, hypotheses=hypotheses,
                              search_joints=tuple(search_joints) if search_joints else None)  # fmt: skip
    except InputError as e:
        _fail(e)
    console.print(summary)


@app.command()
def fit(
    seq: Path = typer.Argument(..., help="Sequence folder with init/poses.npz."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file of FitConfig fields."),
    iterations: Optional[int] = _config_option(FitConfig, "iterations"),
    batch_size: Optional[int] = _config_option(FitConfig, "batch_size"),
    crop_size: Optional[int] = _config_option(FitConfig, "crop_size"),
    schedule: Optional[str] = _config_option(FitConfig, "schedule"),
    track_iterations: Optional[int] = _config_option(FitConfig, "track_iterations"),
    finger_search: Optional[int] = _config_option(FitConfig, "finger_search"),
    restarts: Optional[int] = _config_option(FitConfig, "restarts"),
    keypoints: Optional[str] = _config_option(FitConfig, "keypoints"),
    device: Optional[str] = _config_option(FitConfig, "device"),
    weight: list[str] = typer.Option([], "--weight", help="Energy weight, e.g. --weight mask=20 (repeatable)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from fit/ckpt/state.npz."),
    refit: Optional[str] = typer.Option(None, "--refit", help="Re-fit only these frames of the finished fit, neighbours "
                                        "fixed: flagged, 12:20 (inclusive), or 3,5,7; the fit's own settings."),
    chunk_frames: Optional[int] = typer.Option(None, "--chunk-frames", help="Fit chunks of N frames in parallel, then "
                                               "re-fit the seams (multi-camera schedule)."),
    workers: int = typer.Option(2, "--workers", help="With --chunk-frames: chunks fitted at once (Ray tasks or processes)."),
    threads: Optional[int] = typer.Option(None, help="torch CPU threads (default: one per core; the result depends on it)."),
    deterministic: bool = typer.Option(False, "--deterministic",
                                       help="One thread, deterministic kernels: the same labels on any machine (CPU)."),
    mano_model_path: Optional[Path] = ManoOpt,
    ycb_dir: Optional[Path] = YcbOpt,
) -> None:
    """Fit hand and object poses to the observations (writes fit/)."""
    import time

    from hoannot.fitting.config import load_fit_config
    from hoannot.pipeline import run_fit

    # file times come from the kernel's coarse clock, up to a tick behind time.time(): a
    # checkpoint written in this run's first milliseconds may look older than its start
    started = time.time() - 0.05
    try:
        weights = {}
        for w in weight:
            k, _, v = w.partition("=")
            try:
                weights[k.strip()] = float(v)
            except ValueError:
                raise InputError(f"--weight {w!r}: expected NAME=NUMBER") from None
        if refit is not None:
            if chunk_frames is not None:
                raise InputError("--refit and --chunk-frames: pick one")
            _refit(seq, refit, config, resume, deterministic, weights,
                   dict(iterations=iterations, batch_size=batch_size, crop_size=crop_size, schedule=schedule,
                        track_iterations=track_iterations, finger_search=finger_search, restarts=restarts,
                        keypoints=keypoints, device=device),
                   mano_model_path, ycb_dir, threads)  # fmt: skip
            return
        cfg = load_fit_config(config, iterations=iterations, batch_size=batch_size, crop_size=crop_size,
                              schedule=schedule, track_iterations=track_iterations, finger_search=finger_search,
                              restarts=restarts, keypoints=keypoints, device=device, weights=weights or None)  # fmt: skip
        result = run_fit(seq, cfg, resume, mano_model_path, ycb_dir, threads=threads, deterministic=deterministic,
                         chunk_frames=chunk_frames, workers=workers)  # fmt: skip
    except InputError as e:
        _fail(e)
    except KeyboardInterrupt:
        ckpts = [seq / "fit" / "ckpt" / "state.npz", *sorted((seq / "fit" / "restarts").glob("*/ckpt/state.npz"))]
        ckpt = max((c for c in ckpts if c.is_file()), key=lambda c: c.stat().st_mtime, default=ckpts[0])
        ours = ckpt.is_file() and ckpt.stat().st_mtime >= started  # an older one may be of other settings
        if refit is not None:
            what = "the re-fit wrote nothing; fit/ is as it was"
        elif ours or (resume and ckpt.is_file()):
            what = f"`hoannot fit {seq} --resume` continues from {ckpt}"
        else:
            what = "no step of this run had finished yet"
        err_console.print(f"interrupted: {what}", soft_wrap=True)
        raise typer.Exit(code=130) from None
    q = result.quality
    n_flag = int(q["flag"].sum()) if "flag" in q else 0
    console.print(f"fitted {len(result.poses)} frames; mean IoU hand {q['iou_hand'].mean():.2f}, "
                  f"object {q['iou_object'].mean():.2f}; {n_flag} frame(s) flagged; wrote {seq / 'fit'}")  # fmt: skip


def _refit(seq, frames, config, resume, deterministic, weights, options, mano_model_path, ycb_dir, threads) -> None:
    """``fit --refit``: :func:`hoannot.pipeline.run_refit`, then one line per run."""
    from hoannot.pipeline import run_refit

    for flag, given in (("--config", config is not None), ("--resume", resume), ("--deterministic", deterministic)):
        if given:
            raise InputError(f"--refit uses the settings of the fit it corrects (fit/info.json); drop {flag}")
    given = [f"--{k.replace('_', '-')} {v}" for k, v in options.items() if v is not None]
    given += [f"--weight {k}={v:g}" for k, v in weights.items()] + ([f"--threads {threads}"] if threads else [])
    command = " ".join([f"hoannot fit {seq} --refit {frames}", *given])
    result, record = run_refit(seq, frames, {**options, "weights": weights or None}, mano_model_path, ycb_dir,
                               threads, command=command)  # fmt: skip
    if result is None:
        console.print(record["note"], soft_wrap=True)
        return
    for r in record["runs"]:
        console.print(f"re-fitted frames {r['frames'][0]}-{r['frames'][-1]} (fixed {r['fixed']}; starts "
                      f"{', '.join(r['starts'])}): energy {r['energy_before']:.4g} -> {r['energy_after']:.4g}",
                      soft_wrap=True, markup=False)  # fmt: skip
    q = result.quality
    console.print(f"{len(record['frames'])} frame(s) re-fitted, {int(q['flag'].sum())} still flagged; wrote {seq / 'fit'} "
                  f"(before: {seq / 'fit' / 'refit'})", soft_wrap=True, markup=False)  # fmt: skip


@app.command()
def export(
    seq: Path = typer.Argument(..., help="Sequence folder with fit/poses.npz."),
    stage: str = typer.Option("fit", help="Which poses to export: fit or init."),
    format: str = typer.Option("ho3d", "--format", help="ho3d (meta pickles) or dexycb (labels_*.npz dataset folder)."),
    mano_model_path: Optional[Path] = ManoOpt,
    ycb_dir: Optional[Path] = YcbOpt,
) -> None:
    """Write labels/labels.npz and HO-3D style labels (labels/ho3d/<cam>/meta/*.pkl) or DexYCB ones (labels/dexycb/)."""
    from hoannot.pipeline import run_export

    try:
        path = run_export(seq, stage, mano_model_path, ycb_dir, format)
    except InputError as e:
        _fail(e)
    what = "HO-3D meta files" if format == "ho3d" else f"a DexYCB dataset folder in {path.parent / 'dexycb'}"
    console.print(f"wrote {path} and {what}")


@app.command()
def report(
    seq: Path = typer.Argument(..., help="Sequence folder with fit/poses.npz (or init/poses.npz)."),
    stage: str = typer.Option("fit", help="Which poses to show: fit or init."),
    device: str = typer.Option("cpu", help="cpu or cuda (rendering)."),
    width: int = typer.Option(320, help="Panel render width, pixels (shown 160 wide, at this width on click)."),
    mano_model_path: Optional[Path] = ManoOpt,
    ycb_dir: Optional[Path] = YcbOpt,
    rerun: Optional[Path] = typer.Option(None, "--rerun", help='Also write this Rerun recording (.rrd; open with `rerun FILE.rrd`; needs pip install "hoannot\\[viewer]").'),
) -> None:
    """Write SEQ/report/index.html: meshes over every image, mask and depth agreement, timelines, flagged frames."""
    from hoannot.report import build_report

    try:
        if rerun is not None:  # before the HTML: a missing extra fails at once
            from hoannot.report.rerun_log import check_rerun

            check_rerun(rerun)
        command = f"hoannot report {seq} --stage {stage} --device {device} --width {width}"
        path = build_report(seq, stage, device, mano_model_path, ycb_dir, width, command=command)
        console.print(f"wrote {path}")
        if rerun is not None:
            from hoannot.report.rerun_log import write_recording

            console.print(f"wrote {write_recording(seq, rerun, stage, device, mano_model_path, ycb_dir)}")
    except InputError as e:
        _fail(e)


@app.command()
def run(
    seqs: list[Path] = typer.Argument(..., help="Sequence folders."),
    stages: str = typer.Option("init,fit,export,report", help="Comma-separated stages to run (chain order)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Existing Ray cluster (default: a local Ray; "
                                              "without Ray installed, one sequence after another)."),
    summary: Path = typer.Option(Path("hoannot_run_summary.json"), "--summary", help="Summary JSON to write."),
    init_from_gt: bool = typer.Option(False, "--init-from-gt/--init-auto",
                                      help="Initial poses from ground truth + noise, or init --auto."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file of FitConfig fields."),
    iterations: Optional[int] = _config_option(FitConfig, "iterations"),
    chunk_frames: Optional[int] = typer.Option(None, "--chunk-frames", help="Fit each sequence in chunks of N frames in "
                                               "parallel, then re-fit the seams (fit --chunk-frames)."),
    workers: int = typer.Option(2, "--workers", help="With --chunk-frames: chunks of a sequence fitted at once."),
    mano_model_path: Optional[Path] = ManoOpt,
    ycb_dir: Optional[Path] = YcbOpt,
    seed: int = 0,
) -> None:
    """Run the chain on every sequence (Ray tasks; each resumes where it stopped); exit 1 if any failed."""
    from hoannot.batch import run_cli

    try:
        code = run_cli(seqs, stages, ray_address, summary, init_from_gt, config, iterations, mano_model_path, ycb_dir,
                       seed, console, chunk_frames=chunk_frames, workers=workers)  # fmt: skip
    except InputError as e:
        _fail(e)
    raise typer.Exit(code=code)


@app.command("eval")
def eval_(
    pred: Path = typer.Argument(..., help="Labels: a sequence folder (labels/labels.npz) or an .npz."),
    gt: Optional[Path] = typer.Argument(None, help="Ground truth: a folder (gt/poses.npz) or an .npz (default: PRED's gt/)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for metrics.json and plots (default: PRED/eval)."),
) -> None:
    """Compare labels with ground truth: MPJPE, PA-MPJPE, AUC, F-scores, ADD(-S), penetration."""
    from hoannot.evaluation.report import format_table, run_eval

    gt = gt or pred
    if out is None and pred.is_dir():
        out = pred / "eval"
    try:
        metrics = run_eval(pred, gt, out)
    except InputError as e:
        _fail(e)
    console.print(format_table(metrics))
    if out is not None:
        console.print(f"wrote {out / 'metrics.json'}")


@app.command()
def demo(
    out: Path = typer.Argument(..., help="Folder to create the demo sequence in."),
    cameras: int = typer.Option(2, min=1),
    frames: int = typer.Option(6, min=1),
    iterations: int = typer.Option(60, help="Adam iterations."),
    seed: int = 0,
    auto: bool = typer.Option(False, "--auto", help="Initialise without ground truth (init --auto) instead of ground truth + noise."),
) -> None:
    """Synthesise a small capture, initialise, fit, export and evaluate; print before/after."""
    from hoannot.demo import run_demo

    try:
        table = run_demo(out, cameras=cameras, frames=frames, iterations=iterations, seed=seed, console=console,
                         auto=auto)  # fmt: skip
    except InputError as e:
        _fail(e)
    console.print(table)


def _settings(items: list[str]) -> dict:
    """``["epochs=3", "crop_size=48"]`` -> ``{"epochs": 3, "crop_size": 48}`` (values parsed as YAML)."""
    import yaml

    out = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k.strip():
            raise InputError(f"--set {item!r}: expected NAME=VALUE")
        out[k.strip()] = yaml.safe_load(v)
    return out


@app.command("train-seg")
def train_seg(
    out: Optional[Path] = typer.Argument(None, help="Weights file (default: the user cache, segmentation.pt)."),
    ycb_dir: Optional[Path] = typer.Option(None, "--ycb-dir", help="YCB models for training objects (else primitives)."),
    samples: Optional[int] = _config_option(SegTrainConfig, "samples"),
    steps: Optional[int] = _config_option(SegTrainConfig, "steps"),
    batch_size: Optional[int] = _config_option(SegTrainConfig, "batch_size"),
    lr: Optional[float] = _config_option(SegTrainConfig, "lr"),
    rgbd: Optional[bool] = _config_option(SegmentationConfig, "rgbd", "--rgbd"),
    init_weights: Optional[Path] = typer.Option(None, help="Start from these weights (a .pt state dict)."),
    max_minutes: Optional[float] = _config_option(SegTrainConfig, "max_minutes"),
    device: Optional[str] = _config_option(SegTrainConfig, "device"),
    seed: Optional[int] = _config_option(SegTrainConfig, "seed"),
) -> None:
    """Train the DeepLabV3+ hand/object segmentation on synthetic composites (resumable)."""
    _train_perception("segmentation", out, ycb_dir, init_weights, samples=samples, steps=steps, batch_size=batch_size,
                      lr=lr, rgbd=rgbd, max_minutes=max_minutes, device=device, seed=seed)  # fmt: skip


@app.command("train-kp")
def train_kp(
    out: Optional[Path] = typer.Argument(None, help="Weights file (default: the user cache, keypoints.pt)."),
    ycb_dir: Optional[Path] = typer.Option(None, "--ycb-dir", help="YCB models for training objects (else primitives)."),
    samples: Optional[int] = _config_option(KpTrainConfig, "samples"),
    steps: Optional[int] = _config_option(KpTrainConfig, "steps"),
    batch_size: Optional[int] = _config_option(KpTrainConfig, "batch_size"),
    lr: Optional[float] = _config_option(KpTrainConfig, "lr"),
    stages: Optional[int] = _config_option(KeypointConfig, "stages"),
    init_weights: Optional[Path] = typer.Option(None, help="Start from these weights (a hoannot keypoints .pt)."),
    max_minutes: Optional[float] = _config_option(KpTrainConfig, "max_minutes"),
    device: Optional[str] = _config_option(KpTrainConfig, "device"),
    seed: Optional[int] = _config_option(KpTrainConfig, "seed"),
) -> None:
    """Train the Convolutional Pose Machine for 21 2D hand joints on synthetic hand crops (resumable)."""
    _train_perception("keypoints", out, ycb_dir, init_weights, samples=samples, steps=steps, batch_size=batch_size,
                      lr=lr, stages=stages, max_minutes=max_minutes, device=device, seed=seed)  # fmt: skip


def _train_perception(kind: str, out: Optional[Path], ycb_dir: Optional[Path], init_weights: Optional[Path],
                      **options) -> None:  # fmt: skip
    """``train-seg`` / ``train-kp``: the options (None: not given) over the training config's
    defaults (:class:`~hoannot.annotate.configs.SegTrainConfig` / ``KpTrainConfig``), then train."""
    import torch

    from hoannot.annotate.weights import cache_dir

    out = out or cache_dir() / f"{kind}.pt"
    model, name = (SegTrainConfig, "train-seg") if kind == "segmentation" else (KpTrainConfig, "train-kp")
    try:
        cfg = model.with_settings(options, name, options=True)
        if cfg.device == "cpu":
            torch.set_num_threads(1)  # measured faster than 2 threads on 2 shared cores
        if kind == "segmentation":
            from hoannot.annotate.training import train_segmentation as fn
        else:
            from hoannot.annotate.training import train_keypoints as fn
        info = fn(out, cfg, ycb_dir=ycb_dir, init_weights=init_weights)
    except InputError as e:
        _fail(e)
    done = info.get("done", True) if isinstance(info, dict) else True
    console.print(f"{'wrote' if done else 'checkpointed (rerun to resume)'} {out}")


@app.command()
def train(
    method: str = typer.Argument(..., help="feedback_loop, two_stage, cnn3d or sdnet."),
    labels: list[Path] = typer.Argument(..., help="Training sequence folders (exported labels, or ground truth)."),
    out: Path = typer.Option(..., "--out", help="Run folder (checkpoints; resumed when it has one)."),
    epochs: Optional[int] = typer.Option(None, help="Epochs of the main stage (default: the method's)."),
    val: list[Path] = typer.Option([], "--val", help="Validation sequence folder (repeatable)."),
    set_: list[str] = typer.Option([], "--set", help="Method setting, e.g. --set crop_size=64 (repeatable)."),
    threads: Optional[int] = typer.Option(1, help="torch threads (1 is fastest on 2 shared cores)."),
) -> None:
    """Train a bundled baseline on hoannot labels; checkpoints every epoch, resumes."""
    from hoannot.baselines.train import train as train_fn

    try:
        info = train_fn(method, labels, out, epochs, val_dirs=val or None, overrides=_settings(set_) or None,
                        threads=threads)  # fmt: skip
    except InputError as e:
        _fail(e)
    console.print(f"trained {method} in {info['train_minutes']:.1f} min; wrote {out}")


@app.command()
def bench(
    run: Optional[Path] = typer.Argument(None, help="Run folder from 'hoannot train' (omit with --estimator)."),
    labels: list[Path] = typer.Argument(None, help="Test sequence folders."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for bench.json and the success curve (default: RUN/bench)."),
    estimator: Optional[str] = typer.Option(None, "--estimator", help="module:function of your own estimator."),
    set_: list[str] = typer.Option([], "--set", help="Inference setting, e.g. --set updates=0 (repeatable)."),
) -> None:
    """Benchmark a trained baseline (or your estimator) on labels: MPJPE, PA-MPJPE, AUC, success curve."""
    from hoannot.baselines.bench import bench as bench_fn

    labels = list(labels or [])
    if estimator and run is not None and not (run / "ckpt").is_dir():  # "bench --estimator m:f SEQ..."
        run, labels = None, [run, *labels]
    if not labels:
        _fail(InputError("bench: no test sequence folders given"))
    if out is None and run is not None:
        out = run / "bench"
    try:
        res = bench_fn(run, labels, out, estimator, overrides=_settings(set_) or None)
    except InputError as e:
        _fail(e)
    rows = [("MPJPE (mm)", res["mpjpe_mm"]), ("PA-MPJPE (mm)", res["pa_mpjpe_mm"]), ("AUC 0-50 mm", res["auc"]),
            ("ms / frame", res["ms_per_frame"])]  # fmt: skip
    rows += [(k, res[k]) for k in ("obj_centre_mm", "obj_add_mm") if k in res]
    console.print(f"{res['method']} on {res['frames']} frames")
    for name, v in rows:
        console.print(f"  {name:<14} {v:8.3f}")
    if out is not None:
        console.print(f"wrote {out / 'bench.json'}")


def main() -> None:  # pragma: no cover - console entry point
    app(prog_name="hoannot")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
