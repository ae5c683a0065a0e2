"""The offline demo and its stand-ins: sample SDK, sample driver, board kit, virtual board.

Nothing on the build path imports this package; only the demo command, the
virtual flash/verify backends and the tests do.
"""
