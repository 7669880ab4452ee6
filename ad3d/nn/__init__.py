"""Network building blocks of the learned detectors (torch modules, no detector logic)."""
