"""dattui engine: shares, clones, peers and the network. Knows nothing of screens."""
