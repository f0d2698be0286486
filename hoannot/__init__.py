"""hoannot: offline 3D annotation of hand-object RGB-D captures (HOnnotate-style).

Data flow (see ``hoannot/cli.py``): ``datasets`` (sequence folders, synthetic
captures) -> ``annotate`` (perception, initialisation) -> ``fitting`` (energies,
schedules) using ``models`` (hand, object) and ``renderers`` -> ``datasets.export``
(labels) -> ``evaluation`` (metrics).

Conventions used everywhere unless a docstring says otherwise:

* units: metres and radians; depth images on disk are uint16 with an explicit
  ``depth_scale`` (metres per unit);
* camera frame: OpenCV (x right, y down, z forward); HO-3D export converts to
  OpenGL (see :mod:`hoannot.datasets.conventions`);
* 21 hand keypoints in **HO-3D order** (MANO's 16 kinematic joints followed by
  the thumb, index, middle, ring and pinky tips).
"""

__version__ = "0.1.0"
