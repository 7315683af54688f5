"""`drivelab live` and `drivelab dagger`: collectors, a growing dataset, a trainer and a player.

`collector` drives episodes with the expert or a β-mixture with the current policy (the expert's
action is always the label) and commits them through the crash-safe store; `trainer_actor` runs
the one training loop in periods of ``refresh_every`` batches, each over the episodes committed
by then; `weights` publishes each checkpoint once (``ray.put``); `player` drives the newest
version through watch mode's files; `runner` is the driver loop over Ray actors and `dagger` the
same machinery in rounds without concurrency.
"""
