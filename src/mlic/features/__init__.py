"""Hand-crafted features computed once per cached view: HOG, and region proposals with their store."""
