"""``hoannot report SEQ/``: a self-contained HTML page to judge a fit (or an init) by eye.

``SEQ/report/`` (replaced as a whole when a report is rebuilt)::

    index.html                    the page (relative links only: opens from a file path)
    img/<cam>/<frame:06d>_<panel>.jpg    panels at the render size (opened on click)
    thumb/<cam>/<frame:06d>_<panel>.jpg  the same, 160 px wide (shown in the page)

Panels: ``overlay`` (the posed hand and object meshes, shaded, over the RGB image),
``masks`` (observed vs rendered segmentation) and ``depth`` (|rendered - observed| depth).
See :func:`hoannot.report.build.build_report`.
"""

from hoannot.report.build import build_report

__all__ = ["build_report"]
