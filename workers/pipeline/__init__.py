"""One job's path through a worker, from a parsed record to its ending."""
