"""On the board: serial console, flashing, verification, the RKLLM check, labgrid places, the matrix report."""
