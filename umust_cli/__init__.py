"""umust: unified cross-modal translation of score images, notation, MIDI and audio."""

__version__ = "0.1.0"
