"""Batch orders: which samples (or sequence rows) each training step reads, on which rank.

- `build`: the one entry point, `build_order(config, facts, rank, world_size, state)`, and
  `check_order`, the same order checked before a run folder exists;
- `base`: the `BatchOrder` protocol the loop reads and `RankedOrder`, the scaffolding every
  order shares (rank, world size, start batch, seed, a rank's slice of a global batch);
- `epochs`: the plain shuffled epochs and the epoch-based balancing schemes; `buffers`: the
  v2/v3 label buffers; `sequences`: F-BPTT, WW-TBPTT and S-TBPTT rows; `validation`: val batches;
- `balance`, `binning`, `labels`: the balancing schemes, the bins they draw from, and the train
  split's labels in those bins; `report`: ``drivelab data balance``'s view of the schemes.

It sits between `drivelab.data` (whose facts and samples it orders) and `drivelab.train` (whose
loop reads the order): nothing here reads a frame.
"""
