"""`umust translate`: routes (which translation) and the pipeline that runs them."""
