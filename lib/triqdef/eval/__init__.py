"""Evaluation: accuracy (:mod:`.accuracy`), patch transfer (:mod:`.transfer`), cross-bit alignment
(:mod:`.alignment`), defended-model robustness (:mod:`.robustness`), deployment and Grad-CAM
(:mod:`.deploy`, :mod:`.gradcam`) and cost benchmarks (:mod:`.bench`)."""
