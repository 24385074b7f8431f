"""InfoSAM Studio core: SAM loading, prediction, PEFT, InfoSAM distillation, training, metrics, I/O.

No Qt here: everything is usable from Python and the `infosam` command line.
"""

__version__ = "0.1.0"
