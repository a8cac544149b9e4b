"""The long-running worker: its loop, its local timers and its LISTEN connection."""
