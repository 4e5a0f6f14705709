"""twelve.datasets: the 12 tasks read from their official files and turned into typed batches."""
