"""Modality codecs: each turns one kind of file into token ids and back.

Every codec follows :class:`umust_cli.codecs.base.Codec`; the unified vocabulary
(:mod:`umust_cli.codecs.vocab`) places each codec's local ids into one id space.
"""
