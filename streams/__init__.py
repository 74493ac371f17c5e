"""The streaming job: version timeline, enrichment and regression detection cores, and the Faust app around them."""
