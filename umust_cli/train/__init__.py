"""Training loops and checkpoint files."""
