"""A run: settings, the scheduler and its request steps, recovery, stop rules, the estimate, ``run()``."""
