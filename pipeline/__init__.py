"""detpipe's engine, one subpackage per concern (docs/architecture.md, "Package layout"): policy, writers,
exdf, nexus | triage, eiger | agipd, core, each importing only those below it. Pure Python; never imports Tango."""
