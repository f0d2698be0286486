"""validate_sequence: every fatal problem raises a one-line InputError naming the file."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hoannot.camera import Camera, look_at
from hoannot.io import InputError, write_image, write_json
from hoannot.datasets.sequence import ObjectConfig, SequenceConfig, open_sequence, write_sequence_header
from hoannot.datasets.validate import validate_sequence
from hoannot.models.objects import parse_primitive

W, H = 32, 24
CAMS = ["cam0", "cam1"]
FRAMES = [0, 1]


def make_sequence(root: Path, mesh: str = "primitive:box:0.1,0.05,0.2", depth_mm: float = 600.0) -> Path:
    """2 cameras x 2 frames of 32x24 images, depth_scale 1 mm, a valid sequence."""
    rng = np.random.default_rng(0)
    cams = []
    for i, name in enumerate(CAMS):
        K = np.array([[40.0, 0, W / 2], [0, 40.0, H / 2], [0, 0, 1]])
        T = look_at(np.array([0.6 * np.cos(i), 0.6 * np.sin(i), 0.3]), np.zeros(3))
        cams.append(Camera(name=name, K=K, width=W, height=H, T_world_cam=T, depth_scale=0.001))
    config = SequenceConfig(name="tiny", cameras=CAMS, frames=FRAMES, object=ObjectConfig(id="box", mesh=mesh))
    write_sequence_header(root, config, cams)
    for name in CAMS:
        for f in FRAMES:
            write_image(root / "rgb" / name / f"{f:06d}.png", rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
            depth = np.full((H, W), depth_mm, np.float64) + rng.integers(0, 50, (H, W))
            write_image(root / "depth" / name / f"{f:06d}.png", depth.astype(np.uint16))
    return root


def edit_cameras(root: Path, fn) -> Path:
    path = root / "calibration" / "cameras.json"
    data = json.loads(path.read_text())
    fn(data["cameras"])
    write_json(path, data)
    return path


def edit_config(root: Path, fn) -> Path:
    import yaml

    path = root / "sequence.yaml"
    data = yaml.safe_load(path.read_text())
    fn(data)
    path.write_text(yaml.safe_dump(data))
    return path


def assert_fails(root: Path, file: Path, words: str, check_images: bool = True) -> None:
    with pytest.raises(InputError) as e:
        validate_sequence(root, check_images=check_images)
    msg = str(e.value)
    assert "\n" not in msg
    assert str(file) in msg, msg
    assert words.lower() in msg.lower(), msg


# ---------------------------------------------------------------------------------------
def test_valid_sequence_passes_with_stats(tmp_path):
    root = make_sequence(tmp_path / "seq")
    rep = validate_sequence(root)
    assert rep.cameras == CAMS and rep.frames == FRAMES
    assert rep.image_sizes == {"cam0": (W, H), "cam1": (W, H)}
    assert rep.warnings == []
    # independent computation of the depth range from the files themselves
    seq = open_sequence(root)
    d = np.stack([seq.read_depth("cam1", f) for f in FRAMES])
    s = rep.depth_stats["cam1"]
    assert s.min_m == pytest.approx(d.min(), abs=1e-6) and s.max_m == pytest.approx(d.max(), abs=1e-6)
    assert 0.6 <= s.median_m <= 0.65 and s.valid_fraction == 1.0
    # an opened Sequence validates the same way
    rep2 = validate_sequence(seq)
    assert rep2.depth_stats["cam1"] == s
    assert "cam0: 32x24" in rep.summary()


def test_validation_is_read_only(tmp_path):
    root = make_sequence(tmp_path / "seq")

    def snapshot():
        out = {}
        for p in sorted(root.rglob("*")):
            st = p.stat()
            out[str(p)] = (st.st_mtime_ns, p.is_file() and hashlib.sha256(p.read_bytes()).hexdigest())
        return out

    before = snapshot()
    validate_sequence(root)
    validate_sequence(root, check_images=False)
    assert snapshot() == before  # same files (none added), same mtimes and contents
    # a failing validation must not touch anything either
    os.remove(root / "depth" / "cam1" / "000001.png")
    before2 = snapshot()
    with pytest.raises(InputError):
        validate_sequence(root)
    after2 = snapshot()
    assert after2 == before2


def test_missing_sequence_yaml(tmp_path):
    root = make_sequence(tmp_path / "seq")
    (root / "sequence.yaml").unlink()
    assert_fails(root, root / "sequence.yaml", "not found")


def test_missing_cameras_json(tmp_path):
    root = make_sequence(tmp_path / "seq")
    (root / "calibration" / "cameras.json").unlink()
    assert_fails(root, root / "calibration" / "cameras.json", "not found")


def test_camera_without_calibration(tmp_path):
    root = make_sequence(tmp_path / "seq")
    cal = edit_cameras(root, lambda cams: cams.pop(1))
    assert_fails(root, cal, "no calibration for camera(s) cam1")


def test_duplicate_camera_names(tmp_path):
    root = make_sequence(tmp_path / "seq")
    cal = edit_cameras(root, lambda cams: cams.__setitem__(1, dict(cams[1], name="cam0")))
    assert_fails(root, cal, "duplicate camera name(s) cam0")
    root2 = make_sequence(tmp_path / "seq2")
    yml = edit_config(root2, lambda d: d.__setitem__("cameras", ["cam0", "cam0"]))
    assert_fails(root2, yml, "duplicate camera name(s) cam0")


@pytest.mark.parametrize(
    "field,value,words",
    [
        ("K", [[float("nan"), 0, 16], [0, 40, 12], [0, 0, 1]], "non-finite"),
        ("K", [[40, 0, 16], [0, -40, 12], [0, 0, 1]], "focal lengths must be positive"),
        ("K", [[0, 0, 16], [0, 40, 12], [0, 0, 1]], "focal lengths must be positive"),
        ("depth_scale", 0.0, "depth_scale must be positive"),
        ("depth_scale", -0.001, "depth_scale must be positive"),
    ],
)
def test_bad_intrinsics_and_scale(tmp_path, field, value, words):
    root = make_sequence(tmp_path / "seq")
    cal = edit_cameras(root, lambda cams: cams[0].__setitem__(field, value))
    assert_fails(root, cal, words, check_images=False)


def _rot_z(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


@pytest.mark.parametrize(
    "make_T,words",
    [
        (lambda T: T * np.diag([1.001, 1, 1, 1]), "not orthonormal"),  # scaled
        (lambda T: np.block([[T[:3, :3] @ np.diag([1, 1, -1]), T[:3, 3:]], [np.array([[0, 0, 0, 1.0]])]]), "det"),
        (lambda T: np.vstack([T[:3], [[0, 0, 0.5, 1.0]]]), "last row"),
        (lambda T: np.where(np.eye(4) > 0, np.nan, T), "non-finite"),
    ],
)
def test_non_rigid_extrinsics(tmp_path, make_T, words):
    root = make_sequence(tmp_path / "seq")
    T0 = np.eye(4)
    T0[:3, :3] = _rot_z(0.3)
    T0[:3, 3] = [0.1, 0.2, 0.5]
    cal = edit_cameras(root, lambda cams: cams[1].__setitem__("T_world_cam", make_T(T0).tolist()))
    assert_fails(root, cal, words, check_images=False)


def test_small_rotation_noise_is_accepted(tmp_path):
    root = make_sequence(tmp_path / "seq")
    T = np.eye(4)
    T[:3, :3] = _rot_z(0.3) + 2e-6  # well within 1e-4
    edit_cameras(root, lambda cams: cams[1].__setitem__("T_world_cam", T.tolist()))
    validate_sequence(root, check_images=False)


@pytest.mark.parametrize("kind", ["rgb", "depth"])
@pytest.mark.parametrize("check_images", [True, False])
def test_missing_frame_file(tmp_path, kind, check_images):
    root = make_sequence(tmp_path / "seq")
    p = root / kind / "cam1" / "000001.png"
    p.unlink()
    assert_fails(root, p, f"{kind} frame file not found", check_images=check_images)


@pytest.mark.parametrize("kind", ["rgb", "depth"])
def test_corrupt_image(tmp_path, kind):
    root = make_sequence(tmp_path / "seq")
    p = root / kind / "cam0" / "000001.png"
    p.write_bytes(p.read_bytes()[:60])  # truncated PNG
    assert_fails(root, p, "unreadable image")
    # existence-only validation does not decode
    validate_sequence(root, check_images=False)


def test_corrupt_jpg(tmp_path):
    root = make_sequence(tmp_path / "seq")
    edit_config(root, lambda d: d.__setitem__("rgb_ext", "jpg"))
    for c in CAMS:
        for f in FRAMES:
            write_image(root / "rgb" / c / f"{f:06d}.jpg", np.zeros((H, W, 3), np.uint8))
    validate_sequence(root)
    p = root / "rgb" / "cam1" / "000000.jpg"
    p.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    assert_fails(root, p, "unreadable image")


def test_size_mismatches(tmp_path):
    root = make_sequence(tmp_path / "seq")
    p = root / "depth" / "cam0" / "000000.png"
    write_image(p, np.full((H, W + 2), 600, np.uint16))
    assert_fails(root, p, "!= rgb size")
    # rgb and depth agree with each other but not with the calibration
    root2 = make_sequence(tmp_path / "seq2")
    rp, dp = root2 / "rgb" / "cam1" / "000001.png", root2 / "depth" / "cam1" / "000001.png"
    write_image(rp, np.zeros((H + 4, W, 3), np.uint8))
    write_image(dp, np.full((H + 4, W), 600, np.uint16))
    assert_fails(root2, rp, "calibrated size")


def test_depth_not_uint16(tmp_path):
    root = make_sequence(tmp_path / "seq")
    p = root / "depth" / "cam1" / "000000.png"
    write_image(p, np.full((H, W), 60, np.uint8))
    assert_fails(root, p, "uint16")
    write_image(p, np.full((H, W, 3), 60, np.uint8))  # e.g. an HO-3D RGB-encoded depth
    assert_fails(root, p, "uint16")


def test_rgb_not_colour(tmp_path):
    root = make_sequence(tmp_path / "seq")
    p = root / "rgb" / "cam1" / "000000.png"
    write_image(p, np.zeros((H, W), np.uint8))
    assert_fails(root, p, "(H, W, 3) uint8")


@pytest.mark.parametrize(
    "mesh,words",
    [
        ("meshes/missing.obj", "does not exist"),
        ("primitive:sphere:0.1", "unknown object"),
        ("primitive:box:0.1,0.2", "3 positive sizes"),
        ("primitive:cylinder:0.1,-0.2", "2 positive sizes"),
        ("primitive:box:a,b,c", "3 positive sizes"),
    ],
)
def test_unknown_object(tmp_path, mesh, words):
    root = make_sequence(tmp_path / "seq", mesh=mesh)
    assert_fails(root, root / "sequence.yaml", words, check_images=False)


def test_object_mesh_relative_and_primitives(tmp_path):
    root = make_sequence(tmp_path / "seq", mesh="obj/mesh.obj")
    (root / "obj").mkdir()
    (root / "obj" / "mesh.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    rep = validate_sequence(root, check_images=False)
    assert rep.object_mesh == str((root / "obj" / "mesh.obj").resolve())
    assert parse_primitive("primitive:cylinder:0.03,0.12") == ("cylinder", (0.03, 0.12))
    assert parse_primitive("primitive:box:0.1,0.05,0.2") == ("box", (0.1, 0.05, 0.2))
    # an id-only object is a warning (looked up at init), or checked against a YCB folder
    root2 = make_sequence(tmp_path / "seq2", mesh="")
    rep2 = validate_sequence(root2, check_images=False)
    assert rep2.object_mesh == "ycb:box" and any("YCB" in w for w in rep2.warnings)
    with pytest.raises(InputError, match="no mesh in"):
        validate_sequence(root2, check_images=False, ycb_dir=tmp_path / "ycb")
    (tmp_path / "ycb" / "box").mkdir(parents=True)
    (tmp_path / "ycb" / "box" / "textured.obj").write_text("v 0 0 0\n")
    assert validate_sequence(root2, check_images=False, ycb_dir=tmp_path / "ycb").warnings == []


def test_depth_mostly_zero_is_a_warning(tmp_path):
    root = make_sequence(tmp_path / "seq")
    d = np.zeros((H, W), np.uint16)
    d[:4, :4] = 700
    write_image(root / "depth" / "cam0" / "000001.png", d)
    rep = validate_sequence(root)
    assert len(rep.warnings) == 1 and "mostly zero" in rep.warnings[0] and "cam0" in rep.warnings[0]
    frac = (H * W + 16) / (2 * H * W)  # cam0: one full frame + 16 valid pixels of two
    assert rep.depth_stats["cam0"].valid_fraction == pytest.approx(frac)


def test_implausible_depth_scale_is_a_warning(tmp_path):
    root = make_sequence(tmp_path / "seq")
    edit_cameras(root, lambda cams: cams[1].__setitem__("depth_scale", 1.0))  # metres per mm value
    rep = validate_sequence(root)
    assert any("cam1" in w and "depth_scale" in w for w in rep.warnings)


def test_bad_segmentation(tmp_path):
    root = make_sequence(tmp_path / "seq")
    p = root / "segmentation" / "cam0" / "000000.png"
    write_image(p, np.full((H, W), 2, np.uint8))
    validate_sequence(root)
    write_image(p, np.full((H, W), 7, np.uint8))
    assert_fails(root, p, "labels must be 0, 1 or 2")


# ---------------------------------------------------------------------------------------
# the corpus of issue 21: every command, every bad input -> one line naming the file and the
# problem, exit code 2, existing outputs byte-identical, and (fit) nothing fitted
# ---------------------------------------------------------------------------------------
CW, CH = 48, 36  # the corpus capture: 2 cameras x 2 frames of 48 x 36


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    """A tiny synthetic capture, initialised, with stand-ins for every later output (fit/,
    labels/, report/) so that a command that overwrote them would be seen."""
    from hoannot.cli import app
    from hoannot.pipeline import synth_sequence

    root = tmp_path_factory.mktemp("corpus") / "seq"
    synth_sequence(root, "primitive:box:0.05,0.07,0.1", "open", cameras=2, frames=2, seed=4, width=CW, height=CH,
                   focal=45.0)  # fmt: skip
    shutil.copytree(root / "gt" / "keypoints2d", root / "keypoints2d")
    r = CliRunner().invoke(app, ["init", str(root), "--from-gt"])
    assert r.exit_code == 0, r.output
    (root / "fit").mkdir()
    shutil.copy(root / "init" / "poses.npz", root / "fit" / "poses.npz")
    (root / "fit" / "quality.json").write_text("{}\n")
    for d in ("labels", "report"):
        (root / d).mkdir()
        (root / d / "old.txt").write_text(f"previous {d}\n")
    return root


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}  # fmt: skip


def _cams(root, fn):
    p = root / "calibration" / "cameras.json"
    d = json.loads(p.read_text())
    fn(d["cameras"])
    write_json(p, d)


def _cam0(key, value):
    return lambda r: _cams(r, lambda c: c[0].__setitem__(key, value))


def _K(i, j, v):
    def fn(c):
        c[0]["K"][i][j] = v

    return lambda r: _cams(r, fn)


def _T(M):
    return lambda r: _cams(r, lambda c: c[0].__setitem__("T_world_cam", (np.asarray(c[0]["T_world_cam"]) @ M).tolist()))


def _yaml(fn):
    return lambda r: edit_config(r, fn)


def _mesh(scale=1.0, nan=False):
    def fn(root):
        import trimesh

        m = trimesh.creation.box(extents=[0.05, 0.07, 0.1])
        lines = [f"v {a} {b} {c}" for a, b, c in m.vertices * scale]
        if nan:
            lines[0] = "v nan 0 0"
        lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in m.faces]
        (root / "box.obj").write_text("\n".join(lines) + "\n")
        edit_config(root, lambda d: d["object"].__setitem__("mesh", "box.obj"))

    return fn


def _poses(name="init/poses.npz", **arrays):
    def fn(root):
        p = root / name
        z = dict(np.load(p))
        z.update({k: v(z) if callable(v) else v for k, v in arrays.items()})
        np.savez(p, **z)

    return fn


def _image(rel, make):
    """Rewrite one image: ``make(old_array)`` -> new array (or a writer of ``path``)."""
    import imageio.v3 as iio

    def fn(root):
        p = root / rel
        new = make(iio.imread(p))
        if callable(new):
            new(p)
        else:
            write_image(p, new)

    return fn


def _all(folder, make):
    import imageio.v3 as iio

    return lambda root: [write_image(p, make(iio.imread(p))) for p in sorted((root / folder).glob("*/*.png"))]


def _truncate(rel):
    def fn(root):
        b = (root / rel).read_bytes()
        (root / rel).write_bytes(b[: len(b) // 2])

    return fn


def _write(rel, data: bytes | str):
    return lambda root: (root / rel).write_bytes(data if isinstance(data, bytes) else data.encode())


def _float_tiff(_old):
    from PIL import Image

    return lambda p: Image.fromarray(np.full((CH, CW), 0.8, np.float32)).save(p, format="TIFF")


D0, S0 = "depth/cam0/000000.png", "segmentation/cam0/000000.png"
CAL, YML = "calibration/cameras.json", "sequence.yaml"
FIT = ("fit", "{root}", "--iterations", "1", "--crop-size", "16")
_nan = float("nan")

# name: (break the copy, command line, file named, words of the message)
CORPUS = {
    # fit exited 0 and overwrote fit/
    "focal_negative": (_K(0, 0, -45.0), FIT, CAL, "focal lengths must be positive"),
    "focal_zero": (_K(1, 1, 0.0), FIT, CAL, "focal lengths must be positive"),
    "T_reflected": (_T(np.diag([1, 1, -1, 1.0])), FIT, CAL, "det(R) = -1"),
    "T_scaled": (_T(np.diag([2, 2, 2, 1.0])), FIT, CAL, "not rigid"),
    "T_singular": (_T(np.diag([1, 1, 0, 1.0])), FIT, CAL, "not rigid"),
    "depth_scale_zero": (_cam0("depth_scale", 0.0), FIT, CAL, "depth_scale must be positive"),
    "depth_scale_negative": (_cam0("depth_scale", -0.001), FIT, CAL, "depth_scale must be positive"),
    "depth_scale_metres": (_cam0("depth_scale", 1.0), FIT, D0, "is depth_scale 1.0"),
    "duplicate_camera_calibration": (lambda r: _cams(r, lambda c: c.append(dict(c[0]))), FIT, CAL, "duplicate camera"),
    "duplicate_camera_yaml": (_yaml(lambda d: d["cameras"].append(d["cameras"][0])), FIT, YML, "duplicate camera"),
    "duplicate_frame": (_yaml(lambda d: d["frames"].append(d["frames"][0])), FIT, YML, "duplicate frame id"),
    "calibration_width": (_cam0("width", CW + 2), FIT, D0, "!= calibrated size"),
    "depth_8bit": (_image(D0, lambda a: (a // 4).astype(np.uint8)), FIT, D0, "uint16, got (36, 48) uint8"),
    "depth_float_tiff": (_image(D0, _float_tiff), FIT, D0, "uint16, got (36, 48) float32"),
    "depth_all_zero": (_all("depth", lambda a: np.zeros_like(a)), FIT, D0, "depth is zero everywhere"),
    "segmentation_label_7": (_image(S0, lambda a: np.where(a == 2, 7, a).astype(np.uint8)), FIT, S0, "found 7"),
    "segmentation_no_hand": (_all("segmentation", lambda a: np.where(a == 1, 0, a).astype(np.uint8)), FIT,
                             "segmentation", "no hand pixel"),
    "mesh_millimetres": (_mesh(1000.0), FIT, "box.obj", "millimetres as metres"),
    "mesh_nan_vertex": (_mesh(nan=True), FIT, "box.obj", "non-finite vertices"),
    "box_negative_side": (_yaml(lambda d: d["object"].__setitem__("mesh", "primitive:box:0.05,-0.07,0.1")), FIT, YML,
                          "3 positive sizes"),
    "primitive_millimetres": (_yaml(lambda d: d["object"].__setitem__("mesh", "primitive:box:50,70,100")), FIT, YML,
                              "millimetres as metres"),
    "init_transl_1e6": (_poses(transl=np.full((2, 3), 1e6, np.float32)), FIT, "init/poses.npz", "from the world origin"),
    "init_obj_transl_1e6": (_poses(obj_transl=np.full((2, 3), 1e6, np.float32)), FIT, "init/poses.npz", "obj_transl"),
    "iterations_negative": (None, ("fit", "{root}", "--iterations", "-5"), "fit config: field 'iterations'", "(from --iterations -5)"),
    "num_points_0": (_write("cfg.yaml", "num_points: 0\n"), ("fit", "{root}", "--config", "{root}/cfg.yaml"),
                     "cfg.yaml", "num_points"),
    "weight_nan": (None, ("fit", "{root}", "--weight", "mask=nan"), "fit config: field 'weights.mask'", "finite number (from --weight mask=nan)"),
    "weight_negative": (None, ("fit", "{root}", "--weight", "depth=-20"), "fit config: field 'weights.depth'", "(from --weight depth=-20"),
    # fit ended in a traceback
    "K_2x3": (lambda r: _cams(r, lambda c: c[0].__setitem__("K", c[0]["K"][:2])), FIT, CAL, "K must be 3x3"),
    "depth_rgb": (_image(D0, lambda a: np.zeros((CH, CW, 3), np.uint8)), FIT, D0, "single-channel uint16"),
    "depth_wrong_size": (_image(D0, lambda a: np.full((30, 40), 800, np.uint16)), FIT, D0, "!= calibrated size"),
    "segmentation_wrong_size": (_image(S0, lambda a: np.zeros((30, 40), np.uint8)), FIT, S0, "must be (36, 48) uint8"),
    "segmentation_3_channels": (_image(S0, lambda a: np.stack([a] * 3, -1)), FIT, S0, "got (36, 48, 3)"),
    "keypoints2d_truncated": (_truncate("keypoints2d/cam0.npz"), FIT, "keypoints2d/cam0.npz", "unreadable"),
    "init_poses_truncated": (_truncate("init/poses.npz"), FIT, "init/poses.npz", "not a readable poses .npz"),
    "init_poses_random_bytes": (_write("init/poses.npz", np.random.default_rng(0).bytes(500)), FIT, "init/poses.npz",
                                "not a readable poses .npz"),
    "K_nan": (_K(0, 2, _nan), FIT, CAL, "K has non-finite entries"),
    "T_nan": (_T(np.diag([_nan, 1, 1, 1])), FIT, CAL, "non-finite"),
    "init_poses_unknown_frame": (_poses(frames=np.array([0, 99])), FIT, "init/poses.npz", "[99] are not frames"),
    # CLI values and fit configs
    "crop_size_0": (None, ("fit", "{root}", "--crop-size", "0"), "fit config: field 'crop_size'", "greater than or equal to 8 (from --crop-size 0)"),
    "overlap_negative": (_write("cfg.yaml", "overlap: -1\n"), ("fit", "{root}", "--config", "{root}/cfg.yaml"),
                         "cfg.yaml", "overlap"),
    "config_yaml_list": (_write("cfg.yaml", "- 1\n- 2\n"), ("fit", "{root}", "--config", "{root}/cfg.yaml"),
                         "cfg.yaml", "got a YAML list"),
    "device_gpu0": (None, ("fit", "{root}", "--device", "gpu0"), "fit config: field 'device'", "'gpu0' is not a device"),
    "device_cuda_without_gpu": (None, ("fit", "{root}", "--device", "cuda"), "fit config: field 'device'", "no CUDA GPU"),
    # init
    "init_poses_file_nan": (lambda r: (_poses(transl=np.full((2, 3), _nan, np.float32))(r),
                                       shutil.copy(r / "init" / "poses.npz", r / "p.npz")),
                            ("init", "{root}", "--poses", "{root}/p.npz"), "p.npz", "'transl' has non-finite values"),
    "init_mesh_nan_vertex": (_mesh(nan=True), ("init", "{root}", "--from-gt"), "box.obj", "non-finite vertices"),
    "init_bad_calibration": (_K(0, 0, -1.0), ("init", "{root}", "--from-gt"), CAL, "focal lengths"),
    # export and report read the same files through the same layer
    "export_reflected_T": (_T(np.diag([1, 1, -1, 1.0])), ("export", "{root}"), CAL, "det(R) = -1"),
    "export_fit_poses_nan": (_poses("fit/poses.npz", hand_pose=lambda z: np.full_like(z["hand_pose"], _nan)),
                             ("export", "{root}"), "fit/poses.npz", "'hand_pose' has non-finite values"),
    "export_mesh_millimetres": (_mesh(1000.0), ("export", "{root}"), "box.obj", "millimetres as metres"),
    "export_depth_scale_zero": (_cam0("depth_scale", 0.0), ("export", "{root}"), CAL, "depth_scale"),
    "report_K_nan": (_K(1, 2, _nan), ("report", "{root}"), CAL, "K has non-finite entries"),
    "report_rgb_wrong_size": (_image("rgb/cam1/000001.png", lambda a: a[:30]), ("report", "{root}"),
                              "rgb/cam1/000001.png", "calibrated size"),
    "report_poses_truncated": (_truncate("fit/poses.npz"), ("report", "{root}"), "fit/poses.npz", "not a readable"),
}


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_corpus_one_line_error_exit_2_outputs_unchanged(capture, tmp_path, monkeypatch, case):
    from hoannot.cli import app
    import hoannot.fitting.steps as steps

    def no_fitting(*a, **k):
        raise AssertionError("fitting started: the inputs were not checked first")

    monkeypatch.setattr(steps, "free_variables", no_fitting)
    breaker, argv, file, words = CORPUS[case]
    if case == "device_cuda_without_gpu":
        import torch

        if torch.cuda.is_available():
            pytest.skip("a GPU is visible")
    root = tmp_path / "seq"
    shutil.copytree(capture, root)
    if breaker is not None:
        breaker(root)
    before = _snapshot(root)
    r = CliRunner().invoke(app, [a.format(root=root) for a in argv])
    assert r.exit_code == 2, (r.output, r.exception)
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.output
    line = " ".join(r.output.split())  # rich may wrap a long line
    where = file if file.startswith("fit config") else str(root / file)
    assert where in line and words.lower() in line.lower(), line
    assert _snapshot(root) == before, "existing outputs changed"


def test_corpus_plausibility_is_a_warning_at_init(capture, tmp_path):
    """A mesh or primitive 1000x too big (millimetres as metres): init warns (and writes its
    poses), fit refuses (above)."""
    from hoannot.cli import app

    for i, breaker in enumerate([_mesh(1000.0), _yaml(lambda d: d["object"].__setitem__("mesh", "primitive:box:50,70,100"))]):
        root = tmp_path / f"seq{i}"
        shutil.copytree(capture, root)
        breaker(root)
        r = CliRunner().invoke(app, ["init", str(root), "--from-gt"])
        assert r.exit_code == 0, r.output
        assert "millimetres as metres" in " ".join(r.output.split())


def test_check_device():
    from hoannot.datasets.validate import check_device

    assert check_device("cpu") == "cpu"
    for bad in ("gpu0", "cuda:x", "CPU", ""):
        with pytest.raises(InputError, match="is not a device"):
            check_device(bad)
    with pytest.raises(InputError, match="fits run on cpu or cuda"):
        check_device("mps")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA GPU"):
            check_device("cuda")


def test_a_frame_without_hand_is_fitted_a_sequence_without_hand_is_refused(capture, tmp_path):
    """The hand may leave the view (or perception may miss it) in some frames: those are
    fitted and flagged, not refused; a sequence with no hand pixel at all is refused."""
    from hoannot.datasets.sequence import open_sequence
    from hoannot.io import read_image
    from hoannot.fitting.observations import check_hand_seen

    root = tmp_path / "seq"
    shutil.copytree(capture, root)
    seq = open_sequence(root)
    first = [root / "segmentation" / c.name / f"{seq.frames[0]:06d}.png" for c in seq.cameras]
    for p in first:
        a = read_image(p)
        write_image(p, np.where(a == 1, 0, a).astype(np.uint8))
    check_hand_seen(seq, "segmentation")  # one frame without a hand: fine
    for p in (root / "segmentation").glob("*/*.png"):
        a = read_image(p)
        write_image(p, np.where(a == 1, 0, a).astype(np.uint8))
    with pytest.raises(InputError, match="no hand pixel"):
        check_hand_seen(seq, "segmentation")
