"""Federated learning: MNIST data, models, local training, update codecs, aggregation."""
