"""One KFP component per technique; each folder's component.py is a thin wrapper over ``shrink``."""
