"""See the result: `vidpipe compare` (compare.py: inputs side by side, sliders, crops, heat-maps, plots) and the
report of a run (run.py: the compare page of input vs output plus the manifest as a page), one self-contained
HTML file each (page.py), plots as inline SVG (plots.py), images encoded by PyAV (images.py)."""
