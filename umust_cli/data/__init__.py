"""Corpus building: engraving, performance, synthesis and augmentation of symbolic scores."""
