"""The `ecst` command line: a thin layer over the library, one module per command group (`main.py`
adds them all to the root group), with the options they share in `options.py`."""
