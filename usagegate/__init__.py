"""usagegate: an LLM gateway that records every request under the end user it served."""

__version__ = "0.1.0"
