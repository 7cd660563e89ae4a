"""``taskexec race`` and ``taskexec bench``: the bug reproduced and shown gone, the cost measured.

The comparison strategies live here only; production settings cannot select them.
"""
