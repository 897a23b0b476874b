"""CrystFEL hand-off: the geometry file that lets indexamajig read a detpipe run and its peak list."""
