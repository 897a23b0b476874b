"""detpipe.simulators: detector simulators that encode from the specs, independently of detpipe's decoders.

Imports no other detpipe package and no Tango (import-linter contract). ``EigerSimulator`` is the entry
point; the frame sources and encoders are public so tests can build expectations from them.
"""

from .dataset_replay import DatasetFrames
from .detector_models import DetectorGeometry, DetectorModel
from .eiger_acquisition import DetectorState
from .eiger_compression import BlobLayout, Compression, bslz4_chunk, lz4_block, lz4_chunk
from .eiger_simulator import EigerSimulator
from .frame_source import FrameSource, FrameTruth, Peak, write_truth_sidecar
from .sfx_frames import SfxFrames
from .stream_config import HeaderDetail, StreamFormat

__all__ = [
    "BlobLayout",
    "Compression",
    "DatasetFrames",
    "DetectorGeometry",
    "DetectorModel",
    "DetectorState",
    "EigerSimulator",
    "FrameSource",
    "FrameTruth",
    "HeaderDetail",
    "Peak",
    "SfxFrames",
    "StreamFormat",
    "bslz4_chunk",
    "lz4_block",
    "lz4_chunk",
    "write_truth_sidecar",
]
