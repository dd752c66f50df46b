"""Anomaly-detection methods built on npad (networks, losses, training glue)."""
