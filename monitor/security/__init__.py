"""HTTP-side credentials and limits."""
