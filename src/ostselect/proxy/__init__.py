"""ostselect.proxy."""
