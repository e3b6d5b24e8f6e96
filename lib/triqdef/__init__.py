"""triqdef: TriQDef (ICLR 2026) reimplemented - switchable-precision QNNs, perceptual penalties, patch attacks.

Modules: :mod:`triqdef.data.cifar` (CIFAR-10 sources and subsets), :mod:`triqdef.models`,
:mod:`triqdef.quant` (switchable fake quantization), :mod:`triqdef.training.loop`,
:mod:`triqdef.stages.common` (the DVC stages), :mod:`triqdef.reporting.tables` (results with provenance).
"""

__version__ = "0.1.0"
