"""Where results live: Parquet partitions on any fsspec URL."""
