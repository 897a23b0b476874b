"""What detpipe puts in a Tango database: the server config model (YAML), registration as an idempotent
diff, dsconfig export and the scopes of properties.
"""
