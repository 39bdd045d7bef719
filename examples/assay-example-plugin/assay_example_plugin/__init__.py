"""An example assay plugin: the ``unit_conversions`` scenario and the ``numeric_tolerance``
scorer. assay imports each module only when a suite names what it defines."""

__version__ = "0.1.0"
