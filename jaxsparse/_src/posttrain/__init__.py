"""Internal: post-training pruning (see jaxsparse.posttrain)."""
