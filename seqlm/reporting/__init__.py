"""`seqlm report`: run directories → one self-contained HTML page with figures (matplotlib, imported only here).

runs.py reads a run directory; decimation.py thins long curves; figures.py draws; page.py writes the HTML;
build.py ties them together and writes the files.
"""
