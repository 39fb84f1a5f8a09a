"""Errors raised by the degradation package.

The package never imports harvest, so it has its own small error tree. Every message is one line
that says what is wrong and how to fix it; harvest's CLI treats :class:`DegradationError` like its
own errors (one line, exit status 1).
"""

from __future__ import annotations


class DegradationError(ValueError):
    """Bad input to a degradation function (shape, dtype, parameter out of range)."""
