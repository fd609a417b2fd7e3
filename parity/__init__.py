"""parity: the same weights in npgpt and torchgpt, and proof that they agree.

This package sits at the top of the dependency graph (parity -> npgpt, torchgpt) and owns the
``npgpt`` console script.
"""
