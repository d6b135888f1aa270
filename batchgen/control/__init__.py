"""The control loop's pure parts, time passed in.

Rate gate, cadence, admission, latency, retry policy, a job's state machine.
"""
