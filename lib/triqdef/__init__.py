"""triqdef: TriQDef (ICLR 2026) reimplemented - switchable-precision QNNs, perceptual penalties, patch attacks.

Modules: :mod:`triqdef.data` (CIFAR-10 sources and subsets), :mod:`triqdef.models`,
:mod:`triqdef.quant` (switchable fake quantization), :mod:`triqdef.train`,
:mod:`triqdef.pipeline` (the DVC stages), :mod:`triqdef.tables` (results with provenance).
"""

__version__ = "0.1.0"
