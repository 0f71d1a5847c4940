"""python -m rsdemo.results [DOC]: regenerates docs/RESULTS.md (or DOC) from the section files, measuring nothing."""
import sys

from . import write_doc

print(write_doc(sys.argv[1] if len(sys.argv) > 1 else None))
