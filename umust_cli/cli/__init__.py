"""The thin command-line layer: one Typer file per command group, no math here."""
