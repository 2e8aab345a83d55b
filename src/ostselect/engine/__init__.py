"""ostselect.engine."""
