"""Pure decisions: policies, the SQL gate, privacy accounting.

No I/O beyond reading policy files.
"""
