"""Object storage for output videos (and uploaded inputs) behind the `Storage` seam."""
