"""What a run did: the summary and summary.json, exit codes, the shared figures, ``batchgen status``."""
