"""Reports over run folders: model lines and versions, model cards, comparison plots.

Modules are imported by what they need (matplotlib only for plots), so the trainer can record a
run's provenance without pulling in plotting.
"""
