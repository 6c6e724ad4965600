"""Applications built on the fepy spine (imported explicitly, e.g. ``from fepy.apps import qvmc``)."""
