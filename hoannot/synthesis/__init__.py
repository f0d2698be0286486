"""Data generation: synthetic RGB-D captures with ground truth (:mod:`.capture`), hand
subjects and grasps on real object meshes (:mod:`.subjects`, :mod:`.grasp`), and the
perception networks' training renders (:mod:`.training_assets`, :mod:`.training_renders`).

Nothing that annotates a user's capture imports this package; the perception networks are
trained on its renders (:mod:`hoannot.annotate.training`) and tests and benchmarks draw
their ground truth from it.
"""




