"""Images: the records (visibility, lookups) and the data files, shared by the image API and compute.

``get_image(conn, image_id, ctx)`` is what the compute side uses to resolve an
``imageRef``; ``image_path(settings, image_id)`` is where that image's bytes are.
"""

from novalite.images.records import can_modify, get_image, visible_clause
from novalite.images.store import image_path

__all__ = ["can_modify", "get_image", "image_path", "visible_clause"]
