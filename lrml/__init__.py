"""LRML Explorer: train, evaluate and explain Latent Relational Metric Learning.

The package never imports streamlit; the app in ``app.py`` and ``pages/`` builds
on it, and so does the command line (``python -m lrml``).
"""

__version__ = "0.1.0"
