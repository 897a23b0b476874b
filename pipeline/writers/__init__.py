"""The writing stages: a series goes to the NXmx writer (EIGER) or the EXDF writer (AGIPD), chosen per series
by the selector; pre-compressed chunks are written as they came.
"""
