"""Hand-crafted features computed once per cached view (HOG), and their statistics."""
