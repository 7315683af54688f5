"""`drivelab diagnose`: find copycat, shortcut and inertia failures in a trained run."""
