"""Patch attacks: the patch and its pasting, LAVAN and GAP (:mod:`.patches`), success rates
(:mod:`.success`) and the patch sets every table shares (:mod:`.patchsets`)."""
