"""Sweeps: every study as a grid over config keys x seeds, on Ray Tune (`drivelab sweep`).

`spec` (the typed SWEEP.yaml and its expansion into checked trials), `folder` (the sweep on
disk and its per-trial ledger), `trial` (one trial inside a Ray worker), `resources` (threads and
wait policy when trials share cores), `engine` (Ray Tune), `summary` and `results` (the tables
and figures), `status` (progress from the ledger).
"""
