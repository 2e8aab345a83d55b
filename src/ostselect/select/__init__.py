"""ostselect.select."""
