"""detpipe.devices."""
