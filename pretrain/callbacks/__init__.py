"""One Lightning callback per file."""
