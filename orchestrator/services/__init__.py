"""Services: every write to the domain goes through a function here.

Each is keyword-only, runs in one transaction, locks what it changes, checks the state
machine, writes the new state, appends the audit row and the outbox event together.
"""
