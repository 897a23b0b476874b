"""The names detpipe's device server registers under, apart from the server itself so the command line and the
database tooling can use them without importing every device class."""

SERVER_NAME = "detpipe"  # detpipe server INSTANCE
STARTER_SERVER_NAME = "DetpipeServer"  # the same server as Tango's Starter runs it: <executable> <instance>
