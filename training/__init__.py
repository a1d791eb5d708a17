"""Offline training of the GLEAM-C encoder (imports the same model and preprocessing as the nodes)."""
