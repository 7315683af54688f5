"""Track seeds: which tracks are for collecting and which are held out for evaluation.

Collection records tracks from seed 0 upwards; every closed-loop score (``drivelab eval``, the
demo, the watch player, studies) drives tracks from `HELD_OUT_SEED` upwards, which no collection
with fewer than 10,000 episodes ever sees. Defined once so the two ranges can never drift apart.
`DEFAULT_ENV` is the simulator whose tracks these seeds pick when a verb, a config section or a
sweep names none: one name, so a new default changes every place at once.
"""

from __future__ import annotations

#: First track seed of a collection (`drivelab data collect --seed`).
COLLECTION_SEED = 0
#: First held-out track seed: evaluation, watch mode and studies start here.
HELD_OUT_SEED = 10_000
#: The environment every verb, config section and sweep drives when none is named.
DEFAULT_ENV = "carracing"
