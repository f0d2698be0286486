"""The hand model and the object a sequence folder names (``sequence.yaml``'s ``hand.model``
and ``object``), loaded and checked: what every stage that fits, renders or scores needs.
"""

from __future__ import annotations

from pathlib import Path

from hoannot.datasets.sequence import Sequence
from hoannot.io import InputError
from hoannot.models.hand import HandModel
from hoannot.models.objects import ObjectModel, load_object, resolve_mesh_path


def load_hand_model(seq: Sequence, mano_model_path: str | Path | None = None) -> HandModel:
    """The hand model to fit: ``--mano-model-path`` if given, else ``sequence.yaml``'s
    ``hand.model`` (``"open"`` = the bundled open hand, or a path to MANO_RIGHT.pkl)."""
    spec = mano_model_path or seq.config.hand.model
    if spec in (None, "", "open"):
        return HandModel(None)
    path = Path(spec)
    if not path.is_absolute() and not path.exists():
        path = seq.root / path
    return HandModel(path)


def load_sequence_object(
    seq: Sequence, ycb_dir: str | Path | None = None, max_faces: int = 1000, strict: bool = True
) -> ObjectModel:
    """The object named by ``sequence.yaml`` (mesh path, primitive, or YCB id in ``ycb_dir``).

    Args:
        strict: refuse an object larger than :data:`hoannot.datasets.validate.
            MAX_OBJECT_DIAGONAL_M` (millimetres as metres?; ``init`` only warns:
            :func:`hoannot.datasets.validate.check_object_model`).
    Raises:
        InputError: no mesh given and no ``ycb_dir`` holding the id; a missing, unreadable
            or non-finite mesh, a bad primitive; with ``strict``, an object too large.
    """
    from hoannot.datasets.validate import check_object_model

    oc = seq.config.object
    spec = oc.mesh
    if not spec:
        if ycb_dir is None:
            raise InputError(f"{seq.root / 'sequence.yaml'}: object {oc.id!r} has no mesh; pass --ycb-dir")
        spec = str(Path(ycb_dir) / oc.id)
    obj = load_object(spec, root=seq.root, max_faces=max_faces, symmetric=oc.symmetric, name=oc.id)
    where = seq.root / "sequence.yaml" if spec.startswith("primitive:") else resolve_mesh_path(spec, seq.root)
    check_object_model(obj, where, strict, what=f"object {spec!r}")
    return obj
