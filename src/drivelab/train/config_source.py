"""Which config a `drivelab train` trains: CONFIG + overrides, or a resumed run's own.

Kept apart from `trainer` (which imports torch and Lightning Fabric, ~5 s) so that a config
mistake is answered before any heavy import: the command line calls this first.
"""

from __future__ import annotations

from pathlib import Path

from drivelab.config import ConfigError, ExperimentConfig, load_config


def load_train_config(
    config: Path | None, overrides: list[str], resume: str | Path | None, runs_root: Path
) -> ExperimentConfig:
    """The config to train: CONFIG + overrides, or (with ``--resume`` and no CONFIG) the run's own.

    ``drivelab train --resume RUN key=value`` puts the override where CONFIG would go; it is
    recognised by its ``=`` and applied to the run's config (the trainer then refuses the
    change like any other).
    """
    extra = list(overrides)
    if config is not None and "=" in str(config) and not Path(config).exists():
        extra.insert(0, str(config))
        config = None
    if config is None:
        if resume is None:
            raise ConfigError("give a CONFIG file (or --resume RUN to continue a run)")
        from drivelab.runs.folder import (  # a run: torch is needed anyway
            RunFolder,
            parse_checkpoint_ref,
        )

        run_path, _ = parse_checkpoint_ref(str(resume))
        return load_config(RunFolder.open(run_path, runs_root).config_path, extra)
    return load_config(config, extra)
