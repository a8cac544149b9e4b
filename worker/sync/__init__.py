"""The synchronization engine (mappings, couplings, passes)."""
