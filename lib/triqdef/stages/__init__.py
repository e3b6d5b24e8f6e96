"""One module per DVC stage (``dvc.yaml``); the only code :mod:`triqdef.cli` calls.

:mod:`.common` holds what several stages share (data, model name, checkpoint paths).
"""
