"""Image data on disk (the controller side's image store). The image *records* live in
:mod:`novalite.store.images`; this package holds only the files."""
