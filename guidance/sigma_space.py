"""Conversions between the sampler's denoised predictions and noise predictions.

The hosts sample in sigma space: x = x0 + sigma * eps, and a model call returns the
denoised prediction D = x - sigma * eps.
"""


def _b(sigma, like):
    return sigma.reshape(-1, *([1] * (like.ndim - 1))) if hasattr(sigma, "reshape") else sigma


def to_eps(x, sigma, denoised):
    return (x - denoised) / _b(sigma, x)


def from_eps(x, sigma, eps):
    return x - _b(sigma, x) * eps
