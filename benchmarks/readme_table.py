"""README's result table, generated from ``benchmarks/results/*.json`` (never typed by hand).

One function per results file turns it into table rows (benchmark, result, target, run); the
table replaces what lies between ``<!-- results-table:begin -->`` and ``<!-- results-table:end -->``
in README.md. ``tests/test_benchmark_harness.py`` fails when README's table is not what the results
files give, so a rerun benchmark without a regenerated README (or a hand edit) cannot land.

    python benchmarks/readme_table.py          # rewrite README's table
    python benchmarks/readme_table.py --check  # exit 1 if README's table is out of date
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from harness import REPO, RESULTS

README = REPO / "README.md"
BEGIN, END = "<!-- results-table:begin -->", "<!-- results-table:end -->"

Row = tuple[str, str, str]  # benchmark, result, target (issue)


def _span(values, fmt="{:.1f}", unit="") -> str:
    """``lo-hi`` of ``values`` (or the one value)."""
    lo, hi = min(values), max(values)
    s = fmt.format(lo) if fmt.format(lo) == fmt.format(hi) else f"{fmt.format(lo)}-{fmt.format(hi)}"
    return s + unit


def annotation_accuracy(r: dict) -> list[Row]:
    t, rows = r["targets"], []
    for key, label in (("multi_camera", "cameras"), ("single_camera", "camera")):
        m = r[key]
        rows.append((f"`annotation_accuracy.py`, {m['cameras']} {label if m['cameras'] == 1 else 'cameras'}",
                     f"hand MPJPE {m['hand_mpjpe_mm_before']:.1f} -> {m['hand_mpjpe_mm']:.1f} mm, object ADD "
                     f"{m['object_add_mm_before']:.1f} -> {m['object_add_mm']:.1f} mm",
                     f"<= {t[key]['hand_mpjpe_mm']:g} mm, <= {t[key]['object_add_mm']:g} mm"))  # fmt: skip
    ab = [a for a in r["ablation"] if a["terms"] != "initialisation"]
    full = next(a for a in ab if a["terms"].startswith("full"))
    rest = sorted((a for a in ab if a is not full), key=lambda a: a["hand_mpjpe_mm"])
    near = rest[0]
    gap = near["hand_mpjpe_mm"] - full["hand_mpjpe_mm"]
    spread = max(near.get("hand_mpjpe_std_mm", 0), full.get("hand_mpjpe_std_mm", 0))
    verdict = "by less than the spread over frames" if gap < spread else "by more than the spread over frames"
    floor = r["hand_model_floor"]["hand_mpjpe_mm"]
    best = "the full fit beats every row" if gap > 0 else f"{near['terms']} beats the full fit"
    rows.append(("`annotation_accuracy.py`, ablation",
                 f"{best} ({full['hand_mpjpe_mm']:.2f} mm; nearest {near['terms']} {near['hand_mpjpe_mm']:.2f} mm, "
                 f"{verdict}); {full['hand_mpjpe_mm'] - floor:.1f} mm above the {floor:.1f} mm model floor",
                 "full fit best"))  # fmt: skip
    return rows


def speed(r: dict) -> list[Row]:
    out = []
    for setting, label, target in (("multi_camera", "multi-camera", "10x"), ("single_camera", "single-camera", "5x")):
        rows = [x for x in r["rows"] if x["setting"] == setting]
        if not rows:
            continue
        out.append(f"{label} {_span([x['before']['seconds_per_frame'] for x in rows], '{:.0f}')} -> "
                   f"{_span([x['after']['seconds_per_frame'] for x in rows])} s per frame "
                   f"(**{_span([x['speedup'] for x in rows])}x**, target {target})")  # fmt: skip
    dh = max(x["hand_mpjpe_delta_mm"] for x in r["rows"])
    do = max(x["object_add_delta_mm"] for x in r["rows"])
    caps = sorted({x["object"] for x in r["rows"]})
    return [(f"`speed.py` ({len(caps)} YCB captures, {r['rows'][0]['frames']} frames, default settings, against "
             f"`{r['base_commit'][:7]}`)", "; ".join(out) + f"; worst accuracy change hand {dh:+.2f} mm, object {do:+.2f} mm",
             "10x / 5x, +0.3 / +0.2 mm")]  # fmt: skip


def auto_annotation(r: dict) -> list[Row]:
    caps = r["captures"]
    multi = [c for c in caps if c["cameras"] > 1]
    single = [c for c in caps if c["cameras"] == 1]
    objs = sorted({c["object"] for c in caps})
    res = (f"`init --auto` then `fit`: hand {_span([c['auto']['fit_hand_mpjpe_mm'] for c in multi])} mm against "
           f"{_span([c['gt_start']['fit_hand_mpjpe_mm'] for c in multi])} mm from a ground-truth start (ratio "
           f"{_span([c['auto_over_gt_hand'] for c in multi], '{:.2f}')})")  # fmt: skip
    for c in single:
        res += (f"; single camera {c['auto']['fit_hand_mpjpe_mm']:.2f} vs {c['gt_start']['fit_hand_mpjpe_mm']:.2f} mm "
                f"({c['auto_over_gt_hand']:.2f})")  # fmt: skip
    res += f"; object {_span([c['auto']['fit_object_add_mm'] for c in caps])} mm"
    met = sum(bool(c.get("meets_target")) for c in caps)
    res += f"; target met on {met} of {len(caps)} captures"
    return [(f"`auto_annotation.py` ({len(caps)} captures, {len(objs)} YCB objects: {len(multi)} with "
             f"{_span([c['cameras'] for c in multi], '{:d}')} cameras, {len(single)} single-camera)", res,
             "ratio <= 1.2 (1.3) on every capture")]  # fmt: skip


def auto_annotation_validation(r: dict) -> list[Row]:
    (name, res, target), = auto_annotation(r)
    caps = [c for c in r["captures"] if all("fit_hand_mpjpe_mm" in c["variants"].get(v, {})
                                            for v in ("auto_no_joints", "auto_search_joints"))]  # fmt: skip
    kept = sum(c["auto"]["fit_hand_mpjpe_mm"] == min(c["variants"][v]["fit_hand_mpjpe_mm"]
                                                     for v in ("auto_no_joints", "auto_search_joints")) for c in caps)  # fmt: skip
    name = name.replace("`auto_annotation.py` (", "`auto_annotation.py --only VALIDATION` (held out from every rule: ")
    if caps:  # a run of the default variant alone has no choice to score
        res += f"; the default's choice between the two searches kept the better one on {kept} of {len(caps)}"
    return [(name, res, target)]


def auto_annotation_overrides(r: dict) -> list[Row]:
    """A run of ``auto_annotation.py --fit-set ...``: per capture, the hand ratio against the
    default run's that the run recorded (``baseline``: the default files when it ran)."""
    caps = r["captures"]
    sets = ", ".join(f"{k}={v}" for k, v in r.get("fit_overrides", {}).items())
    base = r.get("baseline") or {}
    was_ratio = base.get("auto_over_gt_hand", {})
    commits = sorted({str(c)[:7] for c in base.get("git_commits", {}).values() if c})
    parts = []
    for c in caps:
        was = f"{was_ratio[c['name']]:.2f} -> " if c["name"] in was_ratio else ""
        parts.append(f"{c['name']} {was}{c.get('auto_over_gt_hand', float('nan')):.2f} "
                     f"({c['auto']['fit_hand_mpjpe_mm']:.2f} vs {c['gt_start']['fit_hand_mpjpe_mm']:.2f} mm)")  # fmt: skip
    met = sum(bool(c.get("meets_target")) for c in caps)
    against = f"default run at {', '.join(f'`{c}`' for c in commits)} -> this" if was_ratio else "this run"
    return [(f"`auto_annotation.py --fit-set {sets}` ({len(caps)} captures)",
             f"hand ratio (auto / ground-truth start), {against}: {'; '.join(parts)}; target met on {met} "
             f"of {len(caps)}", "ratio <= 1.2 (1.3) on every capture")]  # fmt: skip


def auto_fit_lr(r: dict) -> list[Row]:
    caps = r["captures"]
    mm = lambda c, s, v: f"{c[s][v]['fit_hand_mpjpe_mm']:.1f}"  # noqa: E731
    return [(f"`auto_fit_lr.py` ({len(caps)} captures): a faster (lr_pose 0.02) or longer (300 iterations) finger "
             "articulation for automatic starts",
             "fitted hand MPJPE, automatic start default / lr 0.02 / 300 it: " + ", ".join(
                 f"{c['name']} {mm(c, 'auto', 'default')} / {mm(c, 'auto', 'lr_pose_0.02')} / "
                 f"{mm(c, 'auto', 'iterations_300')}" for c in caps) + "; ground-truth start default / lr 0.02: " +
             ", ".join(f"{c['name']} {mm(c, 'gt_start', 'default')} / {mm(c, 'gt_start', 'lr_pose_0.02')}" for c in caps)
             + " mm", "diagnosis (issue 19)")]  # fmt: skip


def finger_search(r: dict) -> list[Row]:
    caps = [c for c in r["captures"] if "auto_over_gt_hand" in c]
    s = r["summary"]
    auto = ", ".join(f"{c['name']} {c['auto']['off']['fit_hand_mpjpe_mm']:.1f} -> {c['auto']['on']['fit_hand_mpjpe_mm']:.1f}"
                     for c in caps)  # fmt: skip
    return [(f"`finger_search.py` ({len(caps)} captures x 2 starts): the fit's finger search off / on",
             f"automatic start, fitted hand MPJPE off -> on: {auto} mm; lower on {s['hand_better']} of {s['pairs']} "
             f"(capture, start) pairs, higher by > 0.1 mm on {s['hand_worse']}; issue 19's hand ratio met on "
             f"{s['meet_off']} -> {s['meet_on']} of {s['captures']} captures",
             "route of issue 19 (auto / gt <= 1.2 on every capture)")]  # fmt: skip


def grasp_search(r: dict) -> list[Row]:
    caps = r["captures"]
    v = "default"
    knows = [c["name"] for c in caps if c["variants"][v]["floor_start_energy"] < c["variants"][v]["search_energy"]]
    return [(f"`grasp_search.py` ({len(caps)} captures): does the search's energy prefer the true grasp?",
             f"the floor grasp, added as a hypothesis, ends with a lower energy than the search's winner on "
             f"{len(knows)} of {len(caps)} ({', '.join(knows) or 'none'}); search winner "
             f"{_span([c['variants'][v]['search_mpjpe_mm'] for c in caps])} mm vs floor "
             f"{_span([c['floor_mm'] for c in caps])} mm", "diagnosis (issue 19)")] + [
        (f"`grasp_search.py` variant `{v}`", "search winner " + ", ".join(
            f"{c['name']} {c['variants']['default']['search_mpjpe_mm']:.1f} -> {c['variants'][v]['search_mpjpe_mm']:.1f} mm "
            f"({c['variants']['default']['seconds']:.0f} -> {c['variants'][v]['seconds']:.0f} s)"
            for c in caps) + " (default -> variant)", "diagnosis (issue 19)")
        for v in (caps[0]["variants"] if caps else {}) if v != "default"]  # fmt: skip


def auto_diagnosis(r: dict) -> list[Row]:
    caps = r["captures"]
    return [(f"`auto_diagnosis.py` ({len(caps)} captures): which part of the automatic start the fit cannot repair",
             "fitted hand MPJPE from the automatic start / with the floor's fingers / thumb only / shape only: " + ", ".join(
                 f"{c['name']} {c['starts']['auto']['fit_hand_mpjpe_mm']:.1f} / "
                 f"{c['starts']['floor_fingers']['fit_hand_mpjpe_mm']:.1f} / "
                 f"{c['starts'].get('floor_thumb', {}).get('fit_hand_mpjpe_mm', float('nan')):.1f} / "
                 f"{c['starts']['floor_betas']['fit_hand_mpjpe_mm']:.1f} mm" for c in caps), "diagnosis (issue 19)")]  # fmt: skip


def grasp_search_fit(r: dict) -> list[Row]:
    fits = [(c["name"], c["variants"]["default"]["fit"]) for c in r["captures"]]
    knows = [n for n, f in fits if (f["floor_start"]["fit_energy"] < f["search"]["fit_energy"])
             == (f["floor_start"]["fit_mpjpe_mm"] < f["search"]["fit_mpjpe_mm"])]  # fmt: skip
    return [(f"`grasp_search.py --fit` ({len(fits)} captures): does the fit's energy prefer the better start?",
             f"after `fit` from the search's winner vs from the floor start, the lower fit energy goes with the lower "
             f"MPJPE on {len(knows)} of {len(fits)}; " + ", ".join(
                 f"{n} {f['search']['fit_mpjpe_mm']:.1f} vs {f['floor_start']['fit_mpjpe_mm']:.1f} mm" for n, f in fits),
             "diagnosis (issue 19)")]  # fmt: skip


def hypothesis_ranking(r: dict) -> list[Row]:
    caps = r["captures"]
    raw = [(c.get("fitted_start") or c["raw_start"])["over_gt_start"] for c in caps if c.get("fitted_start") or c.get("raw_start")]
    won = [c["search_winner"]["over_gt_start"] for c in caps if c.get("search_winner")]
    met = sum(x <= 1.2 for x in raw)
    return [(f"`hypothesis_ranking.py` ({len(caps)} captures, K = {r['k']}, {r['iterations']}-iteration short fits)",
             f"fit from the short-fitted hypothesis with the lowest fit energy: ratio to the gt-start fit "
             f"{_span(raw, '{:.2f}') if raw else '-'} on {len(raw)} (search winner {_span(won, '{:.2f}') if won else '-'}); within 1.2 on {met} of "
             f"{len(caps)}", "ratio <= 1.2 on every capture (issue 19)")]  # fmt: skip


def init_fit(r: dict) -> list[Row]:
    rows = []
    g = r["gt_noise"]["fit"]
    for key, label in (("auto_gt_perception", "`init --auto --perception gt`"),
                       ("auto_model_perception", "`init --auto --perception model` (the seed's path: network labels, Eq. 11)")):  # fmt: skip
        e = r[key]
        rows.append((f"`init_fit.py`, {label}, {r['cameras']} cameras",
                     f"init {e['init']['hand_mpjpe_mm']:.1f} mm / {e['init']['object_add_mm']:.1f} mm, fit "
                     f"{e['fit']['hand_mpjpe_mm']:.1f} mm / {e['fit']['object_add_mm']:.1f} mm",
                     f"within 20 % of ground truth + noise ({g['hand_mpjpe_mm']:.1f} mm / {g['object_add_mm']:.1f} mm)"))  # fmt: skip
    return rows


def perception(r: dict) -> list[Row]:
    return [(f"`perception.py` (held-out hand and objects, {r['train_minutes']:.0f} min of CPU training)",
             f"seg IoU hand {r['seg_iou_hand']:.2f} / object {r['seg_iou_object']:.2f} (RGB-D: "
             f"{r['seg_iou_hand_rgbd']:.2f} / {r['seg_iou_object_rgbd']:.2f}), PCK@10px {r['kp_pck_10px']:.2f} "
             f"(MediaPipe Hands: {r['kp_pck_10px_mediapipe']:.2f})", "0.85, 0.9")]  # fmt: skip


def real_photo(r: dict) -> list[Row]:
    s = r["synthetic"]
    return [("`real_photo.py` (the one real photo; joints from the shipped CPM)",
             f"the joints lie on the hand; with the forearm-cutting crop (`distal_crop`, off by default) the index, middle "
             f"and little tips land within 12-20 px of their nails, but not stably under 2.5 px crop shifts (eye check in "
             f"`real_photo.md`); on {s['views']} held-out synthetic views that crop lowers PCK@10px "
             f"{s['pck_10px_gt_mask_before']:.3f} -> {s['pck_10px_gt_mask_after']:.3f} (gt masks), "
             f"{s['pck_10px_network_mask_before']:.3f} -> {s['pck_10px_network_mask_after']:.3f} (network masks)",
             "hand and joints on the hand (issue 19.6)")]  # fmt: skip


def baselines(r: dict) -> list[Row]:
    methods = [m for m in ("feedback_loop", "two_stage", "cnn3d", "sdnet") if m in r]
    gains = []
    for m in methods:
        g = r[m].get("ablation_gain_mm_per_seed", [])
        wins = sum(x > 0 for x in g)
        gains.append(f"{m} {sum(g) / max(len(g), 1):+.1f} mm ({wins}/{len(g)} seeds)")
    return [(f"`baselines.py` ({len(r['seeds'])} seeds)",
             f"{_span([r[m]['mpjpe_mm'] for m in methods], '{:.0f}')} mm MPJPE vs {r['mean_pose_mpjpe_mm']:.0f} mm for "
             f"the mean pose; each paper's ablation, gain of the full method: {', '.join(gains)}", "paper directions")]  # fmt: skip


def render(r: dict) -> list[Row]:
    return [(f"`render.py` ({r['faces']} faces, {r['views']} views x {r['frames']} frames)",
             f"soft rasterizer {r['binned_ms_per_view']:.0f} ms per view vs PyTorch3D's native path {r['native_ms_per_view']:.0f} ms "
             f"(**{r['speedup']:.0f}x**); zbuf within {r['max_rel_diff_zbuf']:.0e} relative", "faster, same images")]  # fmt: skip


def fit(r: dict) -> list[Row]:
    return [(f"`fit.py` ({r['cameras']} cameras x {r['frames']} frames, {r['iterations']} iterations)",
             f"{r['seconds_per_frame']:.0f} s per frame, peak {r['peak_rss_mb']:.0f} MB; hand MPJPE "
             f"{r['hand_mpjpe_mm_before']:.1f} -> {r['hand_mpjpe_mm_after']:.1f} mm, object ADD "
             f"{r['object_add_mm_before']:.1f} -> {r['object_add_mm_after']:.1f} mm", "memory and time per frame")]  # fmt: skip


def qa(r: dict) -> list[Row]:
    split = r["calibration_split"]
    sw = r.get("swapped", {})
    return [(f"`qa.py` ({len(r['captures'])} captures with wrong starts, occluded and missed hands; calibrated on "
             f"{len(split['calibration_captures'])}, scored on {len(split['scored_captures'])}, {r['frames']} frames)",
             f"per-frame hand error estimate: Spearman {r['spearman_hand']:.2f}, flagged {r['flag_recall_over_10mm']:.2f} "
             f"of frames > 10 mm and {r['flag_rate_under_6mm']:.2f} of frames < 6 mm (swapped split "
             f"{sw.get('spearman_hand', float('nan')):.2f} / {sw.get('flag_recall_over_10mm', float('nan')):.2f} / "
             f"{sw.get('flag_rate_under_6mm', float('nan')):.2f}); object estimate Spearman {r['spearman_object']:.2f}",
             "Spearman >= 0.6, >= 0.8, <= 0.1")]  # fmt: skip


def scale(r: dict) -> list[Row]:
    caps = r["captures"]
    rows = []
    for n in sorted({c.get("frames", r["frames"]) for c in caps}):  # one row per sequence length
        cs = [c for c in caps if c.get("frames", r["frames"]) == n]
        chunk = cs[0].get("chunk_frames", r["chunk_frames"])
        rows.append((f"`scale.py` ({r['cameras']} cameras x {n} frames, chunks of {chunk} on {r['workers']} workers)",
                     f"wall ratio {_span([c['wall_ratio'] for c in cs], '{:.2f}')} (load "
                     f"{max(c['sequential']['loadavg_before'][0] for c in cs):.1f} on {r.get('cpu_count', '?')} cores); "
                     f"hand {_span([c['hand_mpjpe_delta_mm'] for c in cs], '{:+.2f}')} mm, object "
                     f"{_span([c['object_add_delta_mm'] for c in cs], '{:+.2f}')} mm against the sequential fit",
                     "<= 0.65, 0.3 / 0.2 mm"))  # fmt: skip
    return rows


def report_speed(r: dict) -> list[Row]:
    caps = r["captures"]
    parts = []
    for c in caps:
        old = f", old report {c['old_report_seconds']:.0f} s ({c['speedup']:.1f}x faster now)" if "old_report_seconds" in c else ""
        parts.append(f"{c['capture']} {c['frames']} x {c['cameras']}: report {c['report_seconds']:.1f} s vs export "
                     f"{c['export_seconds']:.1f} s (**{c['ratio']:.2f}**){old}")  # fmt: skip
    met = sum(bool(c["meets_target"]) for c in caps)
    return [(f"`report_speed.py` ({len(caps)} captures, {caps[0]['image_size']}, `hoannot report` vs `hoannot export`)",
             "; ".join(parts) + f"; no slower than the export on {met} of {len(caps)}",
             "report / export <= 1 at 1000 x 5 (issue 20.1)")]  # fmt: skip


def train_kp(r: dict) -> list[Row]:
    v = r["variants"]
    best = max((n for n in v if n != "shipped"), key=lambda n: v[n]["pck_10px"])
    caps = list(v["shipped"].get("auto_fit", {}))
    fits = ", ".join(f"{c} {v['shipped']['auto_fit'][c]['fit_hand_mpjpe_mm']} -> {v[best].get('auto_fit', {}).get(c, {}).get('fit_hand_mpjpe_mm', '-')} mm"
                     for c in caps)  # fmt: skip
    return [(f"`train_kp.py` (CPM variants trained on a lent GPU; {r['test_data']['samples']} held-out views, ground-truth masks)",
             f"PCK@10px {v['shipped']['pck_10px']:.2f} (the 45-min CPU model) -> {v[best]['pck_10px']:.2f} ({best}); "
             f"auto fit hand MPJPE {fits}", "0.9 (issue 19 route: perception training)")]  # fmt: skip


#: results file (stem) -> its rows, in the order of the table
TABLE: dict[str, Callable[[dict], list[Row]]] = {
    "annotation_accuracy": annotation_accuracy, "speed": speed, "auto_annotation": auto_annotation,
    "auto_annotation_validation": auto_annotation_validation, "auto_annotation_restarts": auto_annotation_overrides,
    "auto_annotation_finger_search2": auto_annotation_overrides, "auto_annotation_finger_pass": auto_annotation_overrides,
    "finger_search": finger_search, "auto_fit_lr": auto_fit_lr,
    "grasp_search": grasp_search, "grasp_search_fit": grasp_search_fit, "auto_diagnosis": auto_diagnosis, "hypothesis_ranking": hypothesis_ranking, "init_fit": init_fit, "perception": perception, "train_kp": train_kp, "real_photo": real_photo, "baselines": baselines,
    "render": render, "fit": fit, "scale": scale, "qa": qa, "report_speed": report_speed,
}  # fmt: skip


def _run(r: dict) -> str:
    """The run's commit and date, or what the (older) result lacks."""
    commit = str(r.get("git_commit") or "")[:7]
    date = str(r.get("date") or "")[:10]
    return " ".join(x for x in (f"`{commit}`" if commit else "", date) if x) or "not recorded"


def table(results: Path = RESULTS) -> str:
    """The Markdown table of every results file in :data:`TABLE` that exists."""
    lines = ["| benchmark | result | target (issue) | run |", "|---|---|---|---|"]
    for stem, rows in TABLE.items():
        path = results / f"{stem}.json"
        if not path.is_file():
            continue
        r = json.loads(path.read_text())
        for name, res, target in rows(r):
            lines.append(f"| {name} | {res} | {target} | {_run(r)} |")
    return "\n".join(lines)


def render_readme(text: str, results: Path = RESULTS) -> str:
    """README ``text`` with the part between the markers replaced by :func:`table`.

    Raises:
        ValueError: README lacks the markers.
    """
    if BEGIN not in text or END not in text:
        raise ValueError(f"{README}: no {BEGIN} ... {END} block for the results table")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table(results)}\n{END}{tail}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="exit 1 if README's table is not the generated one")
    a = ap.parse_args()
    text = README.read_text()
    new = render_readme(text)
    if a.check:
        if new != text:
            sys.exit(f"{README}: the results table is out of date; run python benchmarks/readme_table.py")
        return
    if new != text:
        from hoannot.io import atomic_write

        with atomic_write(README, "w") as f:
            f.write(new)


if __name__ == "__main__":
    main()
