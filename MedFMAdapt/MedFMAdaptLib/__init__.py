"""Pure-Python parts of the MedFMAdapt Slicer module.

Everything here imports without Qt or a running Slicer, so it is tested by pytest outside Slicer;
`client`, `errors`, `multipart` and `presenter` need only the standard library.
"""
