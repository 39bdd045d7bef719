"""The records every stage passes on (instances, requests, outputs, stats) and the digests
and seeds derived from data."""
