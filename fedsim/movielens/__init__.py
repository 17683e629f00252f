"""FedRLHF on MovieLens (Fan et al. 2025, section 5.1): data, simulated feedback, the task."""
