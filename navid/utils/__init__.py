"""Small shared utilities: atomic file output, output folders, EMA, training plumbing."""
