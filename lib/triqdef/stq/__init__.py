"""STQ (Zakariyya et al. 2025, arXiv 2503.08973): a tiny, deeply quantized CIFAR-10 network robust to attacks.

* :mod:`.quantizers`: the stochastic ternary weight quantizer, the k-bit quantized ReLU and the layers
  that use them (ternary or 8-bit weights).
* :mod:`.model`: ``TinySTQNet`` (grayscale input, 6 convolutional layers with residual connections, 3 dense
  layers), its builder :func:`~triqdef.stq.model.build_stq` (FP baseline or STQ) and its memory footprint.
* :mod:`.distillation`: defensive distillation at temperature T (Papernot et al. 2016): the loss and the
  training steps of the teacher and the student.
* :mod:`.jacobian`: Jacobian regularisation by random projections (Hoffman et al. 2019) and its training step.

The attacks the paper evaluates it with (FGSM, PGD, C&W, Square, Boundary, ZOO from the Adversarial
Robustness Toolbox) are in :mod:`triqdef.eval.art_suite`.
"""
