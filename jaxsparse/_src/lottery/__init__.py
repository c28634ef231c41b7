"""Internal: see ARCHITECTURE.md."""
