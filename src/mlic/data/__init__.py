"""Reading competitions and writing submissions: readers, image decoding and caches, labels, folds, statistics."""
