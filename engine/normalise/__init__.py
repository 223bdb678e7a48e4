"""The normalise stage: concept sets from the mapping files, UCUM units, Observation values.

Pure functions; the only I/O is reading mapping files in `load_terminology`.
"""

from engine.normalise.loader import load_terminology
from engine.normalise.terminology import CodeRange, Concept, Terminology, UnitConversion
from engine.normalise.units import convert, is_valid_ucum, ucum_unit
from engine.normalise.values import DataProblem, Measurement, measure

__all__ = [
    "CodeRange",
    "Concept",
    "DataProblem",
    "Measurement",
    "Terminology",
    "UnitConversion",
    "convert",
    "is_valid_ucum",
    "load_terminology",
    "measure",
    "ucum_unit",
]
