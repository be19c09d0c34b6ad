"""The benchmarks behind `recsys bench`: they import the product, never the reverse."""
