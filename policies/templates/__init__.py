"""Verification templates (核验模板): versioned, fixed predicates over one subject's records.

``model`` is what a template is; ``kinds`` what each kind needs from a dataset; ``loader`` reads
and checks template files; ``claims`` checks a requester's claim; ``sql`` and ``batch`` generate
the parameterised queries of facts (one subject, many subjects); ``decide`` maps facts and claim
to the outcome; ``months`` places the look-back windows. All pure: no I/O beyond reading template
files, no DuckDB.
"""
