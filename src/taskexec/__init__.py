"""taskexec: a task execution API whose rendered-fields writes never race."""

__version__ = "0.1.0"
