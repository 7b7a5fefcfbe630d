"""Item feature store: feature files aligned to the prepared item map, and the `Catalogue` carrier."""

from sessrec.features.catalogue import Catalogue
from sessrec.features.store import (
    DenseFeatures,
    PropertyFeatures,
    SparseFeatures,
    TextFeatures,
    ids_path,
    load_dense,
    load_properties,
    load_sparse,
    load_text,
    write_dense,
    write_properties,
    write_sparse,
)

__all__ = [
    "Catalogue",
    "DenseFeatures",
    "PropertyFeatures",
    "SparseFeatures",
    "TextFeatures",
    "ids_path",
    "load_dense",
    "load_properties",
    "load_sparse",
    "load_text",
    "write_dense",
    "write_properties",
    "write_sparse",
]
