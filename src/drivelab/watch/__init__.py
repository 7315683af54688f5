"""Watch mode: a player process drives each new checkpoint while the trainer goes on.

Charles' "streamed" training showed a model driving while it was still learning, because a loss
curve says little about whether a car stays on the road. ``drivelab train ... --watch-every N``
does the same with a separate *player* process (`drivelab.watch.player`) that drives each new
checkpoint at a multiple of N on one fixed held-out track and logs how it went. `launcher` (the trainer's
side) only starts and stops that process, so the trainer never imports the simulator; `player`
is the process; `spec` is what the two share: the options, the command line, the files.

Cadence. ``N`` must be a multiple of ``train.checkpoint_every`` (checked before a run exists), so a
checkpoint lands on every multiple of N; the player drives those and the period's final batch
(the model the period hands over, always checkpointed). Checkpoints from earlier periods are not
driven again.

Files in the run folder, all written by the player alone:

- ``watch.jsonl``: one row per driven checkpoint, ``{"batch", "watch/score", "watch/reward",
  "watch/completion", "watch/video", ...}``. It is a file of its own rather than more rows in
  ``metrics.jsonl`` so that each file has exactly one writer and rows can never interleave;
  `drivelab.runs.metrics.read_metrics` merges it back in. A row is written last, after the GIF and
  the TensorBoard points, so it doubles as the "watched" marker.
- ``tb/watch/``: the player's own TensorBoard writer (run "watch" next to the trainer's), so the
  two processes never share an event file; scalars ``watch/score|reward|completion`` and the
  video ``watch/video`` at the checkpoint's batch.
- ``watch/batch_<N>.mp4`` (the whole episode) and ``watch/player.log`` (the player's output).

The trainer talks to the player through its stdin: ``finish`` (or end-of-file, which is what a
killed trainer leaves behind) means "drive what is written, then exit", so a player never outlives
its trainer by more than the backlog. Speed: the player runs at ``nice`` +10 with one torch
thread, so the training loop never waits for it; on a 2-core machine it still takes one core's
share while it drives (and none while it waits for the next checkpoint).
"""
