"""What a run did: the summary and summary.json, exit codes, ``batchgen status``."""
