"""Looking at a run: tables for notebooks, figures, model comparisons and the markdown report."""
