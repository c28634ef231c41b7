"""Scores: plain functions `(params, grads, key) -> scores`; lowest pruned."""

from jaxsparse._src.core.scores import ScoreFn, magnitude, random, saliency

__all__ = ("ScoreFn", "magnitude", "random", "saliency")
