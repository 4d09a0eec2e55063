"""Metrics of `umust eval`.

metrics     pure metric functions (SER, note P/R/F1, DTW, EMD, retrieval, FAD)
transcribe  the reference piano transcriber (Transkun, CPU)
embeddings  audio embeddings for FAD (precomputed .npy, aiSFX, LAION-CLAP)
plots       piano-roll figures of DTW alignments
report      pairing and reading inputs; tables, JSON and CSV outputs
runner      the loop over examples: progress bar, going on past bad files
corpus      corpus mode: split rows, --limit, predictions named <piece_id>/<NNN>.<ext>
tasks       one function per `umust eval` subcommand
reference   the reference rows of the papers' tables on a corpus split
"""
