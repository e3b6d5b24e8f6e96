"""CIFAR-10: where it comes from (:mod:`.cifar`) and how training batches are augmented (:mod:`.augment`)."""
