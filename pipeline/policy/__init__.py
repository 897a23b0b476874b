"""The RED/raw data policy: which frames and pixels a run keeps (event selection, ROI/modules, binning,
rounding, sparse), the reduced outputs (RED runs, REDU flags, sparse files), provenance and the run
manifest, the policy stage and offline reduction.

The top layer: it may use every other concern; none uses it.
"""
