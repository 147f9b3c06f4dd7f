"""A camera, an output recorder and node processes for tests, benchmarks and the demo (real rclpy)."""
