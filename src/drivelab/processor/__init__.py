"""Everything between stored data and the policy, owned in one place.

- `state`: the typed, versioned `ProcessorState` (frame stack, normalisation, crop/resize,
  history window, target standardisation, delta heads, with their statistics) a run saves as
  ``processor.json``;
- `statistics`: those statistics, from the training split's moments;
- `layout`: the sample layout (frame stack, history window, delta actions) the loader gathers
  and the runtime streams with the same code;
- `pipeline`: the device-side steps (crop, normalise, resize, standardise history);
- `fit`: `check_fit`, the one answer to "does this data fit this policy";
- `facts`: `DatasetFacts`, what a dataset tells a training config (read once by
  `drivelab.data.facts`); `completion`: the config completed from them, a pure function.

It sits just above `drivelab.config` (below data, sim, runs and models, which use it) and
describes datasets and envs by the few attributes it reads. Import the submodules directly:
``state`` and ``fit`` need no torch, ``pipeline`` does.
"""
