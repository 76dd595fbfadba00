"""One run: the training loop, row recording, run folders, leases and checkpoints."""
