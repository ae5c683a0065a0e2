"""Getting the inputs: checksummed fetch with a download cache, lock pins, safe unpacking."""
