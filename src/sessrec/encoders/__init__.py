"""Item feature encoders: the `FeatureEncoder` interface, built-ins and the name registry.

Built-ins (short name: class): ``id``: `ItemIdEncoder`, ``dense``: `DenseEncoder`, ``sparse_text``:
`SparseTextEncoder`, ``properties``: `PropertyEncoder`, ``concat``: `ConcatEncoder`. See
`sessrec.encoders.base` for the life cycle
(configure, ``bind(catalogue)``, forward) and `sessrec.encoders.registry` for plug-ins.
"""

from sessrec.encoders.base import FeatureEncoder, MissingFill
from sessrec.encoders.concat import ConcatEncoder
from sessrec.encoders.dense import DenseEncoder
from sessrec.encoders.item_id import ItemIdEncoder
from sessrec.encoders.properties import PropertyEncoder
from sessrec.encoders.sparse_text import SparseTextEncoder
from sessrec.features.catalogue import Catalogue

__all__ = [
    "Catalogue",
    "ConcatEncoder",
    "DenseEncoder",
    "FeatureEncoder",
    "ItemIdEncoder",
    "MissingFill",
    "PropertyEncoder",
    "SparseTextEncoder",
]
