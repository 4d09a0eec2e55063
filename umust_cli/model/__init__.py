"""Neural network modules (pure torch; no file I/O)."""
