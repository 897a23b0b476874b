"""NeXus files of an EIGER series: NXmx data and master files, NXprocess groups (the triage record), CXI
peak lists, and reading an archived series back as frames.
"""
