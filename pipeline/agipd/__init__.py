"""AGIPD-1M readout: the Karabo bridge decoder, the train assembler and receiver, offset/gain correction, the
module and cell layouts and the quadrant geometry.

Never imports ``eiger``: the two detector families share only ``core``.
"""
