"""NumPy implementations of the package's functions (private: import them from :mod:`softmaxkit`)."""
