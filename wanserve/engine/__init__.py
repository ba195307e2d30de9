"""The generation engine: Wan pipelines behind the `Runner` seam."""
