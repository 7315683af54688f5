"""Run folders: the bottom layer every stage above reads and writes through.

What lives here is what a *finished or running* run is on disk, independent of how it was
trained or is evaluated: the folder and its versions (`folder`), safetensors checkpoints and
trainer state (`checkpoints`), metric rows (`metrics`), provenance (`provenance`) and saved
closed-loop evaluations (`evals`). `train`, `evaluate`, `models.transfer` and `reports` import
it; it imports none of them (only `config`, `data`, `errors` and `outputs`). Import the
submodules directly: ``drivelab.runs.folder`` needs no torch, ``checkpoints`` does.
"""
