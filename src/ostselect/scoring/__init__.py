"""ostselect.scoring."""
