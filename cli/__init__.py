"""The ``jaxdream`` command line: parse, call the library, report."""
