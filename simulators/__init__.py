"""detpipe.simulators: detector simulators that encode from the specs, independently of detpipe's decoders.

Imports no other detpipe package and no Tango (import-linter contract). ``EigerSimulator`` and
``AgipdSimulator`` are the entry points; the frame sources and encoders are public so tests can build
expectations from them.
"""

from .agipd_constants import AgipdConstants
from .agipd_frames import AgipdTrainArrays
from .agipd_layout import AgipdLayout, AgipdProduct, AgipdSources
from .agipd_scene import AgipdPeak, AgipdTrainTruth
from .agipd_simulator import AgipdSimulator
from .agipd_truth import AgipdTruth
from .dataset_replay import DatasetFrames
from .detector_models import DetectorGeometry, DetectorModel
from .eiger_acquisition import DetectorState
from .eiger_compression import BlobLayout, Compression, bslz4_chunk, lz4_block, lz4_chunk
from .eiger_simulator import EigerSimulator
from .frame_source import FrameSource, FrameTruth, Peak, write_truth_sidecar
from .karabo_bridge_messages import BridgeProtocol
from .karabo_bridge_server import BridgeSocketType
from .sfx_frames import SfxFrames
from .stream_config import HeaderDetail, StreamFormat

__all__ = [
    "AgipdConstants",
    "AgipdLayout",
    "AgipdPeak",
    "AgipdProduct",
    "AgipdSimulator",
    "AgipdSources",
    "AgipdTrainArrays",
    "AgipdTrainTruth",
    "AgipdTruth",
    "BlobLayout",
    "BridgeProtocol",
    "BridgeSocketType",
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
