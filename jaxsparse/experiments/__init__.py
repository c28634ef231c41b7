"""The experiment runner: configs in, tables, plots and checkpoints out."""
