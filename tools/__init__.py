"""Scripts users reach for beside the ``navid`` CLI; each runs as ``python tools/<name>.py --help``.

A package only so the tests can import the scripts; nothing here is part of navid's API.
"""
