"""File -> Manifest -> jobs: pure and sync, every problem located as FILE:LINE."""
