"""``hoannot report SEQ/``: a self-contained HTML page to judge a fit (or an init) by eye.

``SEQ/report/`` (replaced as a whole when a report is rebuilt)::

    index.html              the page (relative links only: opens from a file path)
    img/<frame:06d>.jpg     the frame's sheet: every camera's panels at the render size, one row
                            per camera (opened on click)
    thumb/<frame:06d>.jpg   the same with 160 px wide panels; the page shows each panel as its
                            cell of this sheet (CSS object-position)
    before/                 the same for the frames of the last re-fit, before it

Panels: ``overlay`` (the posed hand and object meshes, shaded, over the RGB image),
``masks`` (observed vs rendered segmentation) and ``depth`` (|rendered - observed| depth).
See :func:`hoannot.report.build.build_report`.
"""

from hoannot.report.build import build_report

__all__ = ["build_report"]
