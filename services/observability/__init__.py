"""Reading traces back: span trees for `cartstream trace` and the demo report."""
