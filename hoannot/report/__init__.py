"""``hoannot report SEQ/``: a self-contained HTML page to judge a fit (or an init) by eye.

``SEQ/report/`` (replaced as a whole when a report is rebuilt)::

    index.html              the page (relative links only: opens from a file path); its
                            images are the sequence's own (``../rgb``), so the report stays
                            in its sequence folder
    layers/<frame:06d>.png  the frame's drawings, one 8-bit palette PNG with transparency:
                            per camera, the box around what is rendered or observed, one
                            layer per panel; the page cuts each out and lays it over the image.
                            For a fit: hard links to ``fit/layers/`` (the fit's last step draws
                            them, :func:`hoannot.pipeline.keep_layers`) for every frame whose
                            pose and observations are unchanged since; the others drawn here
    before/                 the same for the frames of the last re-fit, before it

Panels: ``overlay`` (the posed hand and object meshes, shaded, over the RGB image),
``masks`` (observed vs rendered segmentation) and ``depth`` (|rendered - observed| depth),
the last two over the image dimmed by CSS. Shown 160 px wide; a click shows the camera's
panels at the render size.
See :func:`hoannot.report.build.build_report`.
"""

from hoannot.report.build import build_report

__all__ = ["build_report"]
