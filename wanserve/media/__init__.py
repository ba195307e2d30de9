"""Media: frames to MP4 (PyAV), watermarking, and (later) input images and audio."""
