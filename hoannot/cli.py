"""``hoannot`` command line: parse arguments, call one pipeline function, print a summary.

    hoannot synth OUT/            render a synthetic capture with ground truth
    hoannot init SEQ/             validate (or ingest HO-3D) and write initial poses
    hoannot fit SEQ/              optimise hand and object poses (resumable)
    hoannot export SEQ/           write HO-3D style labels and labels.npz
    hoannot eval PRED GT          compare labels with ground truth
    hoannot demo OUT/             synth -> init -> fit -> export -> eval on a small built-in sequence
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from hoannot.datasets.io import InputError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Hand-object 3D annotation from RGB-D captures.")
console = Console()
err_console = Console(stderr=True)

ManoOpt = typer.Option(None, "--mano-model-path", help="MANO_RIGHT.pkl or its folder (default: bundled open hand).")
YcbOpt = typer.Option(None, "--ycb-dir", help="Folder of YCB models, for objects given by id only.")


def _fail(e: Exception) -> None:
    """Print ``error: <one line naming the file and the problem>`` on stderr; exit code 2."""
    err_console.print(f"[red]error:[/red] {escape(str(e).replace(chr(10), ' '))}", soft_wrap=True)
    raise typer.Exit(code=2)


@app.command()
def synth(
    out: Path = typer.Argument(..., help="Sequence folder to create."),
    object: str = typer.Option("primitive:box:0.055,0.075,0.11", "--object", help="Mesh file, YCB folder or primitive spec."),
    hand: str = typer.Option("open", "--hand", help="'open' (bundled model) or a skinned glTF hand (.glb), e.g. the WebXR hand."),
    cameras: int = typer.Option(2, min=1),
    frames: int = typer.Option(6, min=1),
    seed: int = 0,
    noise: bool = typer.Option(True, help="Depth sensor noise and holes."),
) -> None:
    """Render a synthetic RGB-D capture of a hand grasping an object, with ground truth."""
    from hoannot.pipeline import synth_sequence

    try:
        seq = synth_sequence(out, object, hand, cameras, frames, seed, noise)
    except InputError as e:
        _fail(e)
    console.print(f"wrote {seq.root}: {len(seq.cameras)} cameras x {len(seq.frames)} frames (ground truth in gt/)")


@app.command()
def init(
    seq: Path = typer.Argument(..., help="Sequence folder (hoannot layout, or HO-3D layout with --out)."),
    poses: Optional[Path] = typer.Option(None, "--poses", help="Initial poses (.npz, world frame)."),
    from_gt: bool = typer.Option(False, "--from-gt", help="Initial poses = ground truth + noise (synthetic captures)."),
    noise_deg: float = typer.Option(10.0, help="With --from-gt: rotation error, degrees."),
    noise_mm: float = typer.Option(15.0, help="With --from-gt: translation error, mm."),
    out: Optional[Path] = typer.Option(None, "--out", help="Ingest an HO-3D sequence into this new folder first."),
    object_mesh: Optional[str] = typer.Option(None, "--object-mesh", help="With HO-3D ingest: the object's mesh."),
    mano_model_path: Optional[Path] = ManoOpt,
    ycb_dir: Optional[Path] = YcbOpt,
    seed: int = 0,
) -> None:
    """Validate a sequence and write its initial poses (init/poses.npz)."""
    from hoannot.datasets.ho3d import detect_layout, ingest_ho3d
    from hoannot.pipeline import run_init

    try:
        if detect_layout(seq) == "ho3d":
            if out is None:
                raise InputError(f"{seq}: HO-3D layout: pass --out NEW_FOLDER to ingest it")
            ingest_ho3d(seq, out, object_mesh)
            console.print(f"ingested HO-3D sequence into {out}")
            seq = out
        _, summary = run_init(seq, poses, from_gt, noise_deg, noise_mm, mano_model_path=mano_model_path,
                              ycb_dir=ycb_dir, seed=seed)  # fmt: skip
    except InputError as e:
        _fail(e)
    console.print(summary)


@app.command()
def fit(
    seq: Path = typer.Argument(..., help="Sequence folder with init/poses.npz."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file of FitConfig fields."),
    iterations: Optional[int] = typer.Option(None, help="Adam iterations per batch."),
    batch_size: Optional[int] = typer.Option(None, help="Frames optimised jointly."),
    crop_size: Optional[int] = typer.Option(None, help="Render crop size, pixels."),
    device: Optional[str] = typer.Option(None, help="cpu or cuda."),
    weight: list[str] = typer.Option([], "--weight", help="Energy weight, e.g. --weight mask=20 (repeatable)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from fit/ckpt/state.npz."),
    mano_model_path: Optional[Path] = ManoOpt,
    ycb_dir: Optional[Path] = YcbOpt,
) -> None:
    """Fit hand and object poses to the observations (writes fit/)."""
    from hoannot.fitting.config import load_fit_config
    from hoannot.pipeline import run_fit

    try:
        weights = {}
        for w in weight:
            k, _, v = w.partition("=")
            try:
                weights[k.strip()] = float(v)
            except ValueError:
                raise InputError(f"--weight {w!r}: expected NAME=NUMBER") from None
        cfg = load_fit_config(config, iterations=iterations, batch_size=batch_size, crop_size=crop_size,
                              device=device, weights=weights or None)  # fmt: skip
        result = run_fit(seq, cfg, resume, mano_model_path, ycb_dir)
    except InputError as e:
        _fail(e)
    q = result.quality
    n_flag = int(q["flag"].sum()) if "flag" in q else 0
    console.print(f"fitted {len(result.poses)} frames; mean IoU hand {q['iou_hand'].mean():.2f}, "
                  f"object {q['iou_object'].mean():.2f}; {n_flag} frame(s) flagged; wrote {seq / 'fit'}")  # fmt: skip


@app.command()
def export(
    seq: Path = typer.Argument(..., help="Sequence folder with fit/poses.npz."),
    stage: str = typer.Option("fit", help="Which poses to export: fit or init."),
    mano_model_path: Optional[Path] = ManoOpt,
    ycb_dir: Optional[Path] = YcbOpt,
) -> None:
    """Write HO-3D style labels (labels/ho3d/<cam>/meta/*.pkl) and labels/labels.npz."""
    from hoannot.pipeline import run_export

    try:
        path = run_export(seq, stage, mano_model_path, ycb_dir)
    except InputError as e:
        _fail(e)
    console.print(f"wrote {path} and HO-3D meta files")


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
) -> None:
    """Synthesise a small capture, initialise with noise, fit, export and evaluate; print before/after."""
    from hoannot.demo import run_demo

    try:
        table = run_demo(out, cameras=cameras, frames=frames, iterations=iterations, seed=seed, console=console)
    except InputError as e:
        _fail(e)
    console.print(table)


def main() -> None:  # pragma: no cover - console entry point
    app(prog_name="hoannot")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
