"""The ``detpipe`` command: its subcommands (server, demo, db, reduce), the embedded Tango database and the
child processes they run.
"""
