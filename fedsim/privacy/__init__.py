"""Privacy: DP-FedAvg with clipping and noise (dp_fedavg, settings), its accounting with
Google's dp-accounting (accounting), canary clients (canaries) and the one-run audit's lower
bound on epsilon (audit)."""
