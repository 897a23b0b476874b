"""Online hit triage: peakfinder8, the hit finder and its per-detector geometry, the worker pool and the
dispatcher stage that attaches a triage result to each frame or memory cell.
"""
