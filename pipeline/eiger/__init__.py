"""EIGER readout: the SIMPLON REST client, Stream V1 (JSON) and V2 (CBOR) decoders, the stream receiver, the
acquisition sequence (configure, arm, trigger, disarm) and the module tiling of an image.

Never imports ``agipd``: the two detector families share only ``core``.
"""
