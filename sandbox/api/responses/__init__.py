"""Response models: the one declaration of what each route returns.

A route's answer is validated against its model and serialised from it, so a field that is not
declared here never leaves the server (no filesystem paths, key hashes, engine messages or other
internal columns), and the OpenAPI document describes exactly what is sent. Fields that some
answers lack are optional and left out when absent (see :class:`View`).
"""
