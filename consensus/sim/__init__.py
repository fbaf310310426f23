"""A deterministic discrete-event simulator that runs the real engines under faults."""
