"""Event contracts and their wire codec. Pure: no I/O beyond reading the bundled .avsc files."""

from schemas.catalog import Event, SchemaCatalog, load_catalog
from schemas.codec import Codec, SchemaIds
from schemas.topics import Topics

__all__ = ["Codec", "Event", "SchemaCatalog", "SchemaIds", "Topics", "load_catalog"]
