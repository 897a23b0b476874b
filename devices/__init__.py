"""detpipe's Tango side: the device classes and the server here, the ``detpipe`` command in ``cli``, what goes
into a Tango database in ``tangodb``."""
