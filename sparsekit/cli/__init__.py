"""The ``sparsekit`` command line. One module per command; each parses, calls ONE library function, prints."""
