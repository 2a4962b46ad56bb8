"""Tasks: what an architecture trains on, its loss and phases, and how it predicts (`mlic.tasks.base`)."""
