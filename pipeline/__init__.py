"""detpipe's engine: decoders, queues, stages and writers. Pure Python; never imports Tango."""
