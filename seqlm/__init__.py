"""seqlm: raw text to trained, evaluated Transformer language models, from the shell."""

import os as _os

__version__ = "0.1.0"

# Intel MKL, torch's CPU BLAS, may round a matrix product differently from one process to the
# next (its own docs: dynamic thread counts, code paths chosen at run time) unless its
# conditional numerical reproducibility mode is on. seqlm promises bit-identical resumes on the
# CPU, so it asks for that mode and a fixed thread count; a user's own settings win. MKL reads
# them when it first runs, hence here, before torch is used.
_os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")
_os.environ.setdefault("MKL_DYNAMIC", "FALSE")
