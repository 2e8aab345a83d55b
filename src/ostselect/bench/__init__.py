"""ostselect.bench."""
