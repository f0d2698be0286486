"""validate_sequence: every fatal problem raises a one-line InputError naming the file."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from hoannot.datasets.camera import Camera, look_at
from hoannot.datasets.io import InputError, write_image, write_json
from hoannot.datasets.sequence import ObjectConfig, SequenceConfig, open_sequence, write_sequence_header
from hoannot.datasets.validate import parse_primitive, validate_sequence

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
