"""mlops: run the life of the Rakuten product-classification model (load, train, promote, drift, alert)."""

__version__ = "0.1.0"
