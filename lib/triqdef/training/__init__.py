"""The training loop every model goes through: FP, multi-bit QAT and the defenses (:mod:`.loop`)."""
