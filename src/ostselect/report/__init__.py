"""ostselect.report."""
