"""Audio <-> sheet-music passage retrieval (Carvalho & Widmer, ISMIR 2023)."""
