"""drivelab."""
