"""`umust train`: training commands (codecs, translators, retrieval)."""

from umust_cli.cli._common import not_yet

app = not_yet("train", "codec, translator and retrieval training come with later issues")
