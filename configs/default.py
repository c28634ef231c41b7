"""Default: LeNet-300-100 on digits, gradual magnitude pruning to 90 % vs dense.

Every key, its meaning and default: `jaxsparse/experiments/config.py`.
"""

from jaxsparse.experiments.config import base


def get_config():
  return base()
