"""The types every concern passes on (Frame, Train, series markers, triage results and parameters) and the
machinery that moves them (Stage, StageRunner, FrameQueue, statistics, errors, saving targets, chunk framing).

The bottom layer: it imports no other part of the engine.
"""
