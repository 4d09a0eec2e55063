"""`umust translate`: file -> tokens -> model -> tokens -> file."""

from umust_cli.cli._common import not_yet

app = not_yet("translate", "needs the trained image/audio codecs and translators of later issues")
