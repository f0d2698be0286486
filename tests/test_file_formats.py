"""The one reader/writer of ``keypoints2d/<cam>.npz`` and of segmentation images: the
documented keys, the old key names of files already on disk, and one-line errors."""

import numpy as np
import pytest

from hoannot.io import InputError, write_image, write_npz
from hoannot.datasets.keypoints2d import keypoints2d_path, read_keypoints2d, read_views, write_keypoints2d
from hoannot.datasets.segmentation import read_labels, segmentation_path, write_labels


def _uv(F, seed=0):
    return np.random.default_rng(seed).uniform(0, 100, (F, 21, 2)).astype(np.float32)


def test_written_keys_read_back(tmp_path):
    uv, conf = _uv(3), np.linspace(0, 1, 63, dtype=np.float32).reshape(3, 21)
    p = keypoints2d_path(tmp_path, "cam0")
    write_keypoints2d(p, [4, 5, 6], uv, conf, conf >= 0.5, kp_sha256="abc")
    with np.load(p) as z:
        assert set(z.files) == {"frames", "uv", "conf", "visible", "joint_order", "kp_sha256"}
        assert str(z["joint_order"]) == "ho3d"
    kp = read_keypoints2d(p)
    np.testing.assert_array_equal(kp.frames, [4, 5, 6])
    np.testing.assert_array_equal(kp.uv, uv)
    np.testing.assert_array_equal(kp.confidence(0.2), conf)  # conf wins over visible
    # rows in the requested order; a frame the file lacks: an error or confidence 0
    u, c = read_views([p], ["cam0"], [6, 4], missing="error")
    np.testing.assert_array_equal(u[:, 0], uv[[2, 0]])
    np.testing.assert_array_equal(c[:, 0], conf[[2, 0]])
    with pytest.raises(InputError, match=r"cam0\.npz: no 2D joints for frame\(s\) \[7\]"):
        read_views([p], ["cam0"], [4, 7])
    u, c = read_views([p], ["cam0"], [4, 7], missing="zero")
    assert (c[1] == 0).all() and (u[1] == 0).all() and (c[0, 0] == conf[0]).all()


def test_old_and_ground_truth_files(tmp_path):
    uv = _uv(2)
    conf = np.full((2, 21), 0.7, np.float32)
    # perception wrote the confidences as "confidence" too; a file with only that key reads the same
    write_npz(tmp_path / "old.npz", frames=np.array([0, 1]), uv=uv, confidence=conf)
    np.testing.assert_allclose(read_keypoints2d(tmp_path / "old.npz").confidence(), conf)
    # ground truth: visible only -> 1 and the caller's confidence of a hidden joint
    vis = np.zeros((2, 21), bool)
    vis[:, :5] = True
    write_keypoints2d(keypoints2d_path(tmp_path, "cam0", "gt"), [0, 1], uv, visible=vis)
    c = read_keypoints2d(tmp_path / "gt" / "keypoints2d" / "cam0.npz").confidence(0.2)
    np.testing.assert_array_equal(c, np.where(vis, 1.0, 0.2))
    # no frames array: rows are the sequence's frames in order, and their count must match
    write_npz(tmp_path / "noframes.npz", uv=uv, conf=conf)
    u, _ = read_views([tmp_path / "noframes.npz"], ["c"], [10, 11])
    np.testing.assert_array_equal(u[:, 0], uv)
    with pytest.raises(InputError, match="2 rows but the sequence has 3 frames"):
        read_views([tmp_path / "noframes.npz"], ["c"], [10, 11, 12])


def test_bad_keypoint_files_are_one_line(tmp_path):
    with pytest.raises(InputError, match=r"nope\.npz: file not found \(2D joints of camera cam9\)"):
        read_keypoints2d(tmp_path / "nope.npz", "cam9")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match=r"junk\.npz: unreadable 2D joints"):
        read_keypoints2d(tmp_path / "junk.npz")
    write_npz(tmp_path / "noconf.npz", uv=_uv(1))
    with pytest.raises(InputError, match="needs a 'conf' or 'visible' array"):
        read_keypoints2d(tmp_path / "noconf.npz")
    write_npz(tmp_path / "shape.npz", uv=np.zeros((2, 20, 2)), conf=np.zeros((2, 20)))
    with pytest.raises(InputError, match=r"shape\.npz: expected uv"):
        read_keypoints2d(tmp_path / "shape.npz")
    with pytest.raises(InputError, match="'nope': expected one of keypoints2d, gt"):
        keypoints2d_path(tmp_path, "cam0", "nope")
    with pytest.raises(ValueError):
        write_keypoints2d(tmp_path / "x.npz", [0], _uv(1))  # neither conf nor visible


def test_segmentation_reader_and_writer(tmp_path):
    lab = np.zeros((6, 8), np.uint8)
    lab[1:3, 2:5] = 1
    lab[4:, 6:] = 2
    p = segmentation_path(tmp_path, "cam0", 7)
    assert p == tmp_path / "segmentation" / "cam0" / "000007.png"
    assert segmentation_path(tmp_path, "cam0", 7, "gt") == tmp_path / "gt" / "segmentation" / "cam0" / "000007.png"
    write_labels(p, lab)
    np.testing.assert_array_equal(read_labels(p, (8, 6)), lab)
    with pytest.raises(InputError, match=r"must be \(5, 8\) uint8"):
        read_labels(p, (8, 5))
    write_image(tmp_path / "bad.png", np.full((6, 8), 3, np.uint8))
    with pytest.raises(InputError, match="labels must be 0, 1 or 2, found 3"):
        read_labels(tmp_path / "bad.png", (8, 6))
    with pytest.raises(InputError, match=r"000008\.png: file not found \(segmentation of cam0\)"):
        read_labels(segmentation_path(tmp_path, "cam0", 8), (8, 6), "segmentation of cam0")
    with pytest.raises(InputError, match="expected segmentation or gt"):
        segmentation_path(tmp_path, "cam0", 8, "other")
    with pytest.raises(ValueError):
        write_labels(tmp_path / "x.png", lab.astype(np.int64))
    assert not (tmp_path / "x.png").exists()
