"""Discriminative hand(-object) pose baselines trained on hoannot labels.

One module per method, sharing :mod:`~hoannot.baselines.dataset` (hand-centred depth crops)
and :mod:`~hoannot.baselines.train` (training loop with checkpoints and resume):

* ``feedback_loop`` -- Oberweger et al., ICCV 2015 / TPAMI 2019;
* ``two_stage`` -- Goudie & Galata, 2017;
* ``cnn3d`` -- Deng et al., Hand3D, 2017;
* ``sdnet`` -- CNN + skeleton-difference loss + hierarchical refinement.

Entry points: :func:`hoannot.baselines.train.train` and :func:`hoannot.baselines.bench.bench`.
"""
