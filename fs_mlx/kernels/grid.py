"""Dispatch arithmetic shared by the kernels' geometry functions."""


def ceil_div(a: int, b: int) -> int:
    """How many blocks of b cover a (a >= 0, b > 0): threadgroups for a threads, tiles for a rows."""
    return (a + b - 1) // b
