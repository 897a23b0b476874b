"""EuXFEL data format (EXDF) files of an AGIPD run: module files, train index, the NeXus VDS master over
them, and reading an archived run back as trains.
"""
