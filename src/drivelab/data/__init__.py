"""Datasets: the Zarr episode store, recording, statistics, inspection."""
