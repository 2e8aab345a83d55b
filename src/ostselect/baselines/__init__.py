"""ostselect.baselines."""
