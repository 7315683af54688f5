"""Datasets from and to the ecosystem: donkeycar tubs in, LeRobot v3 datasets out and in."""
