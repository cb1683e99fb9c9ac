"""`make bench`: quality and speed figures, each measured beside a baseline in the same run."""
